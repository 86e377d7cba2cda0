"""Benchmark: IDP on Scientific, zero-shot and fine-tuned, on all and on few training users.

Imports Scientific (UniSRec files) and the LC-Rec Instruments stand-in as the pre-training source
from ``../shared/data`` (never copied into the project), exactly as ``transfer_scientific.py``.
For each training-user fraction (1 = the full target) and seed it runs the baselines from scratch
(SASRec-ID by default; ``bert4rec`` is the baseline of ``idp-bs`` and ``idp-bert4rec``) and the
IDP variants pre-trained on instruments-lcrec (one pre-training run per pre-trained model, shared
by the variants built on it), printing test R@10, N@10, R@50, N@50, epochs and seconds. With
``--m``, first a search of m (source items per generated embedding) on valid NDCG@10 of
``--m-variant`` on the full target; the best m is then used for every IDP run.

    python benchmarks/idp_scientific.py --seeds 2020 --fractions 1,0.3,0.1 --m 1,5,10,20 [--set k=v]

``--no-pretraining`` trains the IDP variants on the target alone, as controls: their item rows then
start random (``idp-idt``: SASRec whose item rows are ID + adapted text, no transfer).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCE = "instruments-lcrec"


def is_idp(method: str) -> bool:
    """IDP variants pre-train on the source; any other method (the baselines) trains on the target only."""
    return method.startswith("idp")


def describe(metrics: dict[str, float]) -> str:
    return (
        f"R@10 {metrics['hr@10']:.4f} N@10 {metrics['ndcg@10']:.4f} "
        f"R@50 {metrics['hr@50']:.4f} N@50 {metrics['ndcg@50']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="sasrec,idp-zeroshot,idp,idp-newencoder")
    parser.add_argument("--seeds", default="2020")
    parser.add_argument(
        "--fractions", default="1,0.3,0.1", help="shares of Scientific's users kept for training and evaluation"
    )
    parser.add_argument(
        "--subsample-seed",
        type=int,
        default=2020,
        help="which users a fraction keeps: the same for every seed, so seeds are paired on the same users",
    )
    parser.add_argument(
        "--m", default="", help="comma-separated m values to search on valid (e.g. 1,5,10,20); empty: the config's m"
    )
    parser.add_argument(
        "--m-variant", default="idp-zeroshot", help="the IDP variant the m search runs (zero-shot costs no training)"
    )
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument(
        "--pretrain-seed",
        type=int,
        default=None,
        help="one pre-training run (this seed) shared by every fine-tuning seed",
    )
    parser.add_argument(
        "--no-pretraining",
        action="store_true",
        help="train the IDP variants from scratch too (a control: e.g. idp-idt is then SASRec with ID + text rows)",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    home = os.environ.setdefault("RECBENCH_HOME", tempfile.mkdtemp(prefix="recbench-bench-"))
    from recbench.compare import overrides_for
    from recbench.data.dataset import is_downloaded, load_dataset
    from recbench.data.download import import_local
    from recbench.registry import parse_assignments
    from recbench.runs.experiment import run_experiment

    for name, path in (
        ("scientific", SHARED / "amazon2018-unisrec" / "Scientific"),
        (SOURCE, SHARED / "amazon2018-lcrec" / "Instruments"),
    ):
        if not is_downloaded(name):
            print(f"import {name}: {import_local(name, path).dataset.counts}")
    runs_dir = args.runs_dir or Path(home) / "runs"
    overrides = parse_assignments(args.overrides)
    seeds = [int(s) for s in args.seeds.split(",")]
    label = f", {' '.join(args.overrides)}" if args.overrides else ""

    def run(method: str, seed: int, extra: dict[str, Any], dataset: Any = None) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        sources = [SOURCE] if is_idp(method) and not args.no_pretraining else None
        result = run_experiment(
            method,
            "scientific",
            seed=seed,
            overrides=overrides_for(method, [{**overrides, **extra}]),
            runs_dir=runs_dir,
            resume=True,
            pretrain_on=sources,
            pretrain_seed=args.pretrain_seed,
            show_progress=False,
            dataset=dataset,
        )
        return result.run.metrics, time.perf_counter() - started

    best_m: dict[str, Any] = {}
    if args.m:
        searched = []
        for m in [int(v) for v in args.m.split(",")]:
            metrics, seconds = run(args.m_variant, seeds[0], {"num_similar": m})
            searched.append((metrics["valid"]["ndcg@10"], m))
            print(
                f"m search: {args.m_variant} m={m} seed {seeds[0]}: "
                f"valid {describe(metrics['valid'])}; {seconds:.0f} s",
                flush=True,
            )
        best_m = {"num_similar": max(searched)[1]}
        print(f"m search: best m = {best_m['num_similar']} (valid N@10 {max(searched)[0]:.4f})", flush=True)

    for fraction in [float(f) for f in args.fractions.split(",")]:
        for seed in seeds:
            subset = (
                None if fraction == 1 else load_dataset("scientific").subsample_users(fraction, args.subsample_seed)
            )
            for method in args.methods.split(","):
                metrics, seconds = run(method, seed, best_m if is_idp(method) else {}, subset)
                fit = metrics.get("fit", {})
                how = (
                    "from scratch"
                    if not is_idp(method) or args.no_pretraining
                    else f"pre-trained on {SOURCE}" + (f", m {best_m['num_similar']}" if best_m else "")
                )
                print(
                    f"{method} ({how}, users {fraction:g}{label}) seed {seed}: "
                    f"{describe(metrics['test'])}; {fit.get('epochs_run')} epochs (best {fit.get('best_epoch')}), "
                    f"{fit.get('seconds_per_epoch', 0):.1f} s/epoch, {seconds:.0f} s in all",
                    flush=True,
                )


if __name__ == "__main__":
    main()
