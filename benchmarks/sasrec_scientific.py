"""Benchmark: SASRec-ID on UniSRec's Scientific with the published protocol.

Ingests the UniSRec files (default ``../shared/data/amazon2018-unisrec/Scientific``, never copied
into the project), trains SASRec (hidden 300, CE, lr 1e-3, batch 2048 targets, early stopping on
valid NDCG@10) and prints test R@10, N@10, R@50, N@50 next to the published row, seconds per
epoch, seconds per full evaluation and peak memory.

    python benchmarks/sasrec_scientific.py [--from DIR] [--seeds 2020] [--runs-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

PUBLISHED = {"hr@10": 0.1080, "ndcg@10": 0.0553, "hr@50": 0.2042, "ndcg@50": 0.0760}  # UniSRec Table 2
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2018-unisrec" / "Scientific"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--seeds", default="2020", help="comma-separated seeds")
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    parser.add_argument("--method", default="sasrec")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="recbench-bench-")
    os.environ.setdefault("RECBENCH_HOME", home)
    from recbench.data.download import import_local
    from recbench.registry import parse_assignments
    from recbench.runs.experiment import run_experiment

    started = time.perf_counter()
    imported = import_local("scientific", args.source)
    print(
        f"ingest: {imported.dataset.counts} in {time.perf_counter() - started:.2f} s; "
        f"mismatches: {imported.mismatches or 'none'}"
    )
    runs_dir = args.runs_dir or Path(home) / "runs"
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        result = run_experiment(
            args.method,
            "scientific",
            seed=seed,
            overrides=[parse_assignments(args.overrides)],
            runs_dir=runs_dir,
            restart=True,
            device="auto",
            show_progress=True,
        )
        metrics = result.run.metrics
        fit = metrics["fit"]
        rows.append((seed, metrics["test"], fit))
        print(
            f"seed {seed}: "
            + "  ".join(f"{k} {metrics['test'][k]:.4f} (published {v:.4f})" for k, v in PUBLISHED.items())
            + f"\n  epochs {fit['epochs_run']} (best {fit['best_epoch']}), {fit['seconds_per_epoch']:.2f} s/epoch, "
            f"{fit['seconds_per_eval']:.2f} s per full validation pass, test pass {metrics['test_seconds']:.2f} s"
        )
    if len(rows) > 1:
        import numpy as np

        for key, published in PUBLISHED.items():
            values = np.array([r[1][key] for r in rows])
            print(
                f"mean {key}: {values.mean():.4f} ± {values.std(ddof=1):.4f} "
                f"(published {published:.4f}, {100 * (values.mean() / published - 1):+.1f}%)"
            )
    print(f"peak memory (max RSS): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
