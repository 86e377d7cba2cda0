"""Benchmark: AutoMLP's DARTS search of the short-term length at its default budget, on UniSRec's Scientific.

Runs only the architecture search (not the final training) of ``automlp`` for each seed, exactly as a
``recbench train automlp`` run starts (:func:`recbench.runs.experiment.architecture_search`), and prints
per seed the chosen short-term length k, the search's seconds, softmax(alpha) at the start and at the
end with the margin between the two largest weights, and every point of the alpha trajectory. A
decisive search is one whose final margin is large and whose k does not change with the seed.

Imports UniSRec's Scientific files (default ``../shared/data/amazon2018-unisrec/Scientific``, never
copied into the project) into ``--home`` if the dataset is not there; the text embeddings (automlp
fuses item ID and text) are encoded once and cached there.

    python benchmarks/automlp_search_scientific.py --home ../bench-home [--seeds 2020,2021,2022] [--method automlp]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2018-unisrec" / "Scientific"


def describe(weights: list[float], candidates: list[int]) -> str:
    """softmax(alpha) as "k:weight" pairs, largest first, with the margin of the top two."""
    ranked = sorted(zip(weights, candidates), reverse=True)
    margin = ranked[0][0] - ranked[1][0] if len(ranked) > 1 else 1.0
    return ", ".join(f"{k}:{w:.3f}" for w, k in ranked) + f" (margin {margin:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--home", type=Path, required=True, help="RECBENCH_HOME (datasets, embeddings)")
    parser.add_argument("--seeds", default="2020,2021,2022")
    parser.add_argument("--method", default="automlp", help="automlp (ID + text) or automlp-id")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    os.environ["RECBENCH_HOME"] = str(args.home.resolve())

    from recbench.data.dataset import is_downloaded, load_dataset
    from recbench.data.download import import_local
    from recbench.registry import get_method, parse_assignments, resolve_config
    from recbench.runs.experiment import architecture_search

    if not is_downloaded("scientific"):
        import_local("scientific", args.source)
    dataset = load_dataset("scientific")
    entry = get_method(args.method)
    config = resolve_config(entry, parse_assignments(args.overrides))
    warmup = f" after {config.search_warmup_steps} weight-only warm-up steps" if config.search_warmup_steps else ""
    print(f"{args.method} on scientific {dataset.counts}: {config.search_steps} search steps{warmup}")
    for seed in (int(s) for s in args.seeds.split(",")):
        search = architecture_search(entry, config, dataset, run=None, seed=seed, device="cpu", reuse=False)
        details = search["details"]
        candidates = details["lengths"]
        trajectory = details["trajectory"]
        print(f"seed {seed}: k = {search['config_updates']['short_length']} in {details['seconds']:.0f} s")
        for point in trajectory:
            phase = " (warm-up)" if point.get("warmup") else ""
            losses = "".join(f", {name} {point[name]:.4f}" for name in ("train_loss", "valid_loss") if name in point)
            print(
                f"  step {point['step']:>4}{phase} ({point['epochs']:.2f} epochs): "
                f"{describe(point['weights'], candidates)}{losses}"
            )


if __name__ == "__main__":
    main()
