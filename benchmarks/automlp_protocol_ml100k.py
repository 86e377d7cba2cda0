"""Benchmark: AutoMLP's protocol on MovieLens-100K (RecBole's atomic files, never copied into the project).

AutoMLP (WWW 2023) removes users with fewer than 10 interactions, ranks each test target against 100
negatives sampled by popularity (recbench's ``pop100``) and reports MRR@10, NDCG@10 and HR@10. This runs
``sasrec``, ``bert4rec`` and ``automlp`` that way (3 seeds) and prints the table, plus the same runs
under ``full`` for scale. Finished runs are reused; keep ``--runs-dir`` outside the repository.

    python benchmarks/automlp_protocol_ml100k.py --home ../bench-home --runs-dir ../bench-runs/ml100k
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k-recbole"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--home", type=Path, required=True, help="RECBENCH_HOME (datasets, negatives)")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--methods", default="sasrec,bert4rec,automlp")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    os.environ["RECBENCH_HOME"] = str(args.home.resolve())

    from recbench.compare import compare
    from recbench.data.dataset import is_downloaded, load_dataset
    from recbench.data.download import import_local
    from recbench.data.filters import InteractionFilter

    name = "ml-100k-u10"
    if not is_downloaded(name):
        import_local(name, args.source, interaction_filter=InteractionFilter(min_user_interactions=10))
    print(f"{name}: {load_dataset(name).counts}")
    report, outcomes = compare(
        [name],
        args.methods.split(","),
        seeds=args.seeds,
        runs_dir=args.runs_dir,
        device="cpu",
        metrics=["mrr@10", "ndcg@10", "hr@10"],
        out=str(args.runs_dir / "report"),
        formats=("md", "json"),
        live=False,
        protocols=["pop100", "full"],
    )
    for outcome in outcomes:
        if outcome.error:
            print(f"failed: {outcome.cell}: {outcome.error}")
    print(report.to_markdown())
    for other in report.others.values():
        print(other.to_markdown())


if __name__ == "__main__":
    main()
