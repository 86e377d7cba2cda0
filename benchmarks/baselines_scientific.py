"""Benchmark: the published tables' baselines on UniSRec's Scientific, against their published rows.

Trains each baseline on Scientific for ``--seeds`` seeds (finished runs are reused, unfinished ones
resumed: keep ``--runs-dir`` outside the repository), then prints per method the mean ± sample std
of R@10, N@10, R@50 and N@50 (full ranking, recbench's default protocol), the Δ% of the means against
the published Scientific row where a shipped recipe has one (UniSRec Table 2: FDSA, S3-Rec, SASRec_T,
ZESRec), and the median seconds per epoch and epochs run.

Methods that pre-train on source domains (``supports_pretraining`` and not ``pretrains_on_target``:
ZESRec, PeterRec) pre-train once (``--pretrain-seed``) on the source available offline, the LC-Rec
Instruments stand-in (the paper's sources, FHCKM, are not held here; the table says so). S3-Rec
pre-trains on Scientific's own training part, as published. Both datasets are imported from
``../shared/data`` into ``--home`` if missing (never copied into the project).

    python benchmarks/baselines_scientific.py --home ../bench-home --runs-dir ../bench-runs/baselines \\
        [--methods fdsa,s3rec,...] [--seeds 3] [--first-seed 2020] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
METHODS = "fdsa,s3rec,sasrec-t,zesrec,zesrec-ft,gru4rec,gru4recf,fpmc,nextitnet,caser,peterrec"
METRICS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50")
SOURCE = "instruments-lcrec"


def published_rows(dataset: str) -> dict[str, dict[str, float]]:
    """Method -> the published metrics on ``dataset`` from every shipped recipe (the first recipe wins)."""
    from recbench.recipes import get_recipe, recipe_names

    rows: dict[str, dict[str, float]] = {}
    for name, source in recipe_names().items():
        if source != "built in":
            continue
        for row in get_recipe(name).rows:
            if dataset in row.published and not row.settings and not row.init:
                rows.setdefault(row.method, row.published[dataset])
    return rows


def summary(values: list[float]) -> str:
    """Mean ± sample standard deviation (just the value for one seed)."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="RECBENCH_HOME (datasets, embeddings)")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds: --first-seed, the next, ...")
    parser.add_argument("--first-seed", type=int, default=2020)
    parser.add_argument("--pretrain-seed", type=int, default=2020, help="one source pre-training per method")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    args = parser.parse_args()
    os.environ["RECBENCH_HOME"] = str(args.home.resolve())

    from recbench.data.dataset import is_downloaded
    from recbench.data.download import import_local
    from recbench.registry import get_method, parse_assignments
    from recbench.runs.experiment import run_experiment

    for name, path in (
        ("scientific", SHARED / "amazon2018-unisrec" / "Scientific"),
        (SOURCE, SHARED / "amazon2018-lcrec" / "Instruments"),
    ):
        if not is_downloaded(name):
            print(f"import {name}: {import_local(name, path).dataset.counts}", flush=True)
    published = published_rows("scientific")
    overrides = [parse_assignments(args.overrides)]
    lines = [
        f"Scientific, full ranking, {args.seeds} seed(s) from {args.first_seed}, mean ± std; Δ% of the mean against "
        "the published row (UniSRec Table 2) where there is one; sources pre-trained on: the Instruments stand-in",
        "",
        "| method | R@10 | N@10 | R@50 | N@50 | published R@10 / N@10 | Δ R@10 | Δ N@10 | s/epoch | epochs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in args.methods.split(","):
        entry = get_method(method)
        from_sources = entry.cls.supports_pretraining and not entry.cls.pretrains_on_target
        results = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            result = run_experiment(
                method,
                "scientific",
                seed=seed,
                overrides=overrides,
                runs_dir=args.runs_dir,
                resume=True,
                pretrain_on=[SOURCE] if from_sources else None,
                pretrain_seed=args.pretrain_seed if from_sources else None,
                device="cpu",
                show_progress=False,
            )
            metrics = result.run.metrics
            results.append(metrics)
            test = metrics["test"]
            print(
                f"{method} seed {seed}: " + ", ".join(f"{m} {test[m]:.4f}" for m in METRICS),
                flush=True,
            )
        means = {m: statistics.mean(r["test"][m] for r in results) for m in METRICS}
        row = published.get(method)
        delta = [f"{(means[m] / row[m] - 1) * 100:+.1f}%" if row else "-" for m in ("hr@10", "ndcg@10")]
        timed = [r["fit"].get("seconds_per_epoch") for r in results if r["fit"].get("seconds_per_epoch")]
        seconds = f"{statistics.median(timed):.1f}" if timed else "- (not trained)"
        epochs = "/".join(str(r["fit"]["epochs_run"]) for r in results)
        cells = [summary([r["test"][m] for r in results]) for m in METRICS]
        shown = f"{row['hr@10']:.4f} / {row['ndcg@10']:.4f}" if row else "-"
        label = f"{method} (pre-trained on {SOURCE})" if from_sources else method
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {shown} | {delta[0]} | {delta[1]} | {seconds} | {epochs} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
