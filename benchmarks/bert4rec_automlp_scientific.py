"""Benchmark: BERT4Rec and AutoMLP on UniSRec's Scientific with the published protocol.

Ingests the UniSRec files (default ``../shared/data/amazon2018-unisrec/Scientific``, never copied
into the project) into a temporary RECBENCH_HOME, trains each method with each seed (early
stopping on valid NDCG@10, full ranking) and prints test R@10, N@10, R@50, N@50, seconds per
epoch and, for AutoMLP, the searched short-term length k and the search time. BERT4Rec is shown
next to the published RecBole row (UniSRec Table 2); AutoMLP has no published number on this data.

    python benchmarks/bert4rec_automlp_scientific.py --methods bert4rec,automlp --seeds 2020,2021,2022
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

PUBLISHED = {"bert4rec": {"hr@10": 0.0488, "ndcg@10": 0.0243, "hr@50": 0.1185, "ndcg@50": 0.0393}}  # UniSRec Table 2
KEYS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50")
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2018-unisrec" / "Scientific"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--methods", default="bert4rec,automlp", help="comma-separated method names")
    parser.add_argument("--seeds", default="2020,2021,2022", help="comma-separated seeds")
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-seed results here")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="recbench-bench-")
    os.environ.setdefault("RECBENCH_HOME", home)
    import numpy as np

    from recbench.data.download import import_local
    from recbench.registry import parse_assignments
    from recbench.runs.experiment import run_experiment

    started = time.perf_counter()
    imported = import_local("scientific", args.source)
    print(
        f"ingest: {imported.dataset.counts} in {time.perf_counter() - started:.2f} s; "
        f"mismatches: {imported.mismatches or 'none'}",
        flush=True,
    )
    runs_dir = args.runs_dir or Path(home) / "runs"
    results: dict[str, list[dict]] = {}
    for method in args.methods.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            result = run_experiment(
                method,
                "scientific",
                seed=seed,
                overrides=[parse_assignments(args.overrides)],
                runs_dir=runs_dir,
                resume=True,
                device="auto",
                show_progress=False,
            )
            metrics = result.run.metrics
            fit, search = metrics["fit"], metrics.get("search") or {}
            results.setdefault(method, []).append(
                {"seed": seed, "test": metrics["test"], "fit": fit, "search": search, "run": str(result.run.path)}
            )
            published = PUBLISHED.get(method, {})
            details = search.get("details", {})
            print(
                f"{method} seed {seed}: "
                + "  ".join(
                    f"{k} {metrics['test'][k]:.4f}" + (f" (published {published[k]:.4f})" if k in published else "")
                    for k in KEYS
                )
                + f"\n  epochs {fit['epochs_run']} (best {fit['best_epoch']}), {fit['seconds_per_epoch']:.2f} s/epoch, "
                f"{fit['seconds_per_eval']:.2f} s per validation pass"
                + (
                    f"\n  searched {search.get('config_updates')} in {details.get('seconds', 0):.0f} s; "
                    f"architecture weights {details.get('weights')}"
                    if search
                    else ""
                ),
                flush=True,
            )
        rows = results[method]
        if len(rows) > 1:
            for key in KEYS:
                values = np.array([r["test"][key] for r in rows])
                note = f" (published {PUBLISHED[method][key]:.4f})" if method in PUBLISHED else ""
                print(f"{method} mean {key}: {values.mean():.4f} ± {values.std(ddof=1):.4f}{note}")
            print(f"{method} mean s/epoch: {np.mean([r['fit']['seconds_per_epoch'] for r in rows]):.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
