"""Benchmark: `recbench leaderboard` from stored runs, and the permutation test on its own.

Fabricates finished run directories (no model is trained) for 8 methods x 2 datasets x 3 seeds
with the user counts of Arts (45,486) and Instruments (24,962), then times reading the runs,
building the report with per-user statistics (tests, bootstrap CIs, corrections) and rendering
every format. Targets: the leaderboard under 2 s; 10,000 sign flips over 50,000 users
under 5 s. Run with one BLAS thread, as on a shared machine:

    OMP_NUM_THREADS=1 python benchmarks/leaderboard_speed.py [--runs-dir DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATASETS = {"arts": (45_486, 21_019), "instruments": (24_962, 9_964)}  # users, items (paper Table 1)
METHODS = {
    "sasrec": 1.0,
    "bert4rec": 1.6,
    "unisrec_t": 0.95,
    "unisrec_t_id": 0.8,
    "vqrec": 0.85,
    "idasr": 0.9,
    "lshsr": 0.88,
    "automlp": 1.2,
}
SEEDS = (1, 2, 3)


def fabricate(runs_dir: Path) -> None:
    """Write finished runs whose ranks are correlated across methods through a per-user difficulty."""
    from recbench.runs.metrics import TIE_POLICY, EvalResult, metrics_from_ranks
    from recbench.runs.record import RunRecord

    rng = np.random.default_rng(0)
    for dataset, (users, items) in DATASETS.items():
        difficulty = rng.lognormal(np.log(120), 1.8, users)  # typical rank of the held-out item
        protocol = {
            "split": "test",
            "candidates": "all items",
            "num_candidates": items,
            "num_users": users,
            "mask_history": False,
            "ties": TIE_POLICY,
            "max_history": 50,
        }
        for method, factor in METHODS.items():
            for seed in SEEDS:
                ranks = np.clip(np.rint(difficulty * factor * rng.lognormal(0, 0.7, users)), 1, items).astype(np.int32)
                identity = {
                    "method": method,
                    "config": {},
                    "dataset": dataset,
                    "fingerprint": f"{dataset}-fp",
                    "seed": seed,
                }
                run = RunRecord.for_experiment(runs_dir, dataset, method, seed, identity)
                run.write_config(identity)
                result = EvalResult("test", ranks, metrics_from_ranks(ranks), protocol)
                run.finish(EvalResult("valid", ranks, result.metrics, {**protocol, "split": "valid"}), result)


def best_of(repeat: int, work) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        value = work()
        times.append(time.perf_counter() - started)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="fabricate runs here (default: a temporary directory)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="report the best of this many timings")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="recbench-leaderboard-") as scratch:
        run_benchmark(args.runs_dir or Path(scratch) / "runs", args.repeat)


def run_benchmark(runs_dir: Path, repeat: int) -> None:
    from recbench.results.leaderboard import leaderboard, load_results
    from recbench.results.report import build_report
    from recbench.results.stats import permutation_test

    started = time.perf_counter()
    fabricate(runs_dir)
    print(
        f"fabricated {len(METHODS)} methods x {len(DATASETS)} datasets x {len(SEEDS)} seeds "
        f"in {time.perf_counter() - started:.1f} s under {runs_dir}"
    )

    seconds, results = best_of(repeat, lambda: load_results(runs_dir))
    print(f"read {len(results)} runs (config, protocol, ranks):             {seconds:.3f} s")
    for label, options in (
        ("vs baseline sasrec, t-test, Holm", {"baseline": "sasrec"}),
        ("all pairs, t-test, Holm", {}),
        ("vs baseline sasrec, Wilcoxon, Holm", {"baseline": "sasrec", "test": "wilcoxon"}),
        ("vs baseline sasrec, 10,000 sign flips", {"baseline": "sasrec", "test": "permutation"}),
    ):
        seconds, report = best_of(
            repeat, functools.partial(build_report, results, ("hr@10", "ndcg@10", "hr@50", "ndcg@50"), **options)
        )
        print(f"report, 4 metrics, {len(report.comparisons):3d} comparisons ({label}): {seconds:.3f} s")
    seconds, _ = best_of(repeat, lambda: [report.render(fmt) for fmt in ("md", "tex", "csv", "json")])
    print(f"render md + tex + csv + json:                          {seconds:.3f} s")
    seconds, _ = best_of(
        repeat, lambda: leaderboard(runs_dir, baseline="sasrec", fmt="tex", out=runs_dir.parent / "table.tex")
    )
    print(f"leaderboard() end to end (read, stats, write .tex):    {seconds:.3f} s   [target < 2 s]")

    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "recbench.cli",
        "leaderboard",
        str(runs_dir),
        "--baseline",
        "sasrec",
        "--format",
        "md",
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    state = "ok" if completed.returncode == 0 else f"exit {completed.returncode}: {completed.stderr.strip()[-200:]}"
    print(
        f"`recbench leaderboard --format md` process, imports included: {time.perf_counter() - started:.3f} s ({state})"
    )

    diffs = np.random.default_rng(1).normal(0.001, 0.3, 50_000)
    seconds, p = best_of(repeat, lambda: permutation_test(diffs, n_permutations=10_000, seed=0))
    print(f"permutation test, 10,000 sign flips x 50,000 users:    {seconds:.3f} s (p = {p:.4f})   [target < 5 s]")


if __name__ == "__main__":
    main()
