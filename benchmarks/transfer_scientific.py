"""Benchmark: text-based / transfer methods on Scientific, from scratch and pre-trained.

Imports Scientific (UniSRec files) and, as the pre-training source available offline, the LC-Rec
Instruments stand-in (title + categories + brand text) from ``../shared/data`` (never copied into
the project), then for each method trains on Scientific from scratch and after pre-training on
the source, printing test R@10, N@10, R@50, N@50, seconds per epoch and epochs.

    python benchmarks/transfer_scientific.py --methods idasr,idasr-id,lshsr --seeds 2020 [--set k=v]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="idasr,idasr-id,lshsr")
    parser.add_argument("--seeds", default="2020")
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument(
        "--pretrain-seed",
        type=int,
        default=None,
        help="one pre-training run (this seed) shared by every fine-tuning seed",
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--protocols",
        default="full",
        help="comma-separated evaluation protocols; the first drives early stopping and is the one printed",
    )
    parser.add_argument("--no-scratch", action="store_true", help="only the pre-trained runs")
    parser.add_argument("--no-pretrained", action="store_true", help="only the runs from scratch")
    args = parser.parse_args()
    home = os.environ.setdefault("RECBENCH_HOME", tempfile.mkdtemp(prefix="recbench-bench-"))
    from recbench.data.dataset import is_downloaded
    from recbench.data.download import import_local
    from recbench.registry import parse_assignments
    from recbench.runs.experiment import run_experiment

    for name, path in (
        ("scientific", SHARED / "amazon2018-unisrec" / "Scientific"),
        ("instruments-lcrec", SHARED / "amazon2018-lcrec" / "Instruments"),
    ):
        if not is_downloaded(name):
            print(f"import {name}: {import_local(name, path).dataset.counts}")
    runs_dir = args.runs_dir or Path(home) / "runs"
    overrides = [parse_assignments(args.overrides)]
    protocols = args.protocols.split(",")
    for method in args.methods.split(","):
        for sources in ([None] if not args.no_scratch else []) + (
            [["instruments-lcrec"]] if not args.no_pretrained else []
        ):
            for seed in [int(s) for s in args.seeds.split(",")]:
                started = time.perf_counter()
                result = run_experiment(
                    method,
                    "scientific",
                    seed=seed,
                    overrides=overrides,
                    runs_dir=runs_dir,
                    resume=True,
                    pretrain_on=sources,
                    pretrain_seed=args.pretrain_seed,
                    protocols=protocols,
                    show_progress=False,
                )
                m, fit = result.run.metrics["test"], result.run.metrics.get("fit", {})
                label = ("pre-trained on instruments-lcrec" if sources else "from scratch") + (
                    f", {' '.join(args.overrides)}" if args.overrides else ""
                )
                print(
                    f"{method} ({label}) seed {seed}: "
                    f"R@10 {m['hr@10']:.4f} N@10 {m['ndcg@10']:.4f} R@50 {m['hr@50']:.4f} N@50 {m['ndcg@50']:.4f}; "
                    f"{fit.get('epochs_run')} epochs (best {fit.get('best_epoch')}), "
                    f"{fit.get('seconds_per_epoch', 0):.1f} s/epoch, "
                    f"{time.perf_counter() - started:.0f} s in all",
                    flush=True,
                )


if __name__ == "__main__":
    main()
