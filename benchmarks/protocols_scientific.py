"""Benchmark: how much the evaluation protocol moves each number, on UniSRec's Scientific.

Imports the UniSRec files (default ``../shared/data/amazon2018-unisrec/Scientific``, never copied into
the project), runs ``recbench compare`` over METHODS x SEEDS with every protocol of ``--protocols``
(early stopping on the first), then prints, per protocol, the mean of each metric and the order of the
methods, and the change of each method's number from the first protocol. Finished runs are reused, so
an interrupted benchmark continues where it stopped (keep ``--runs-dir`` outside the repository).

Also times one test evaluation of a finished SASRec run under each protocol (median of 3).

    python benchmarks/protocols_scientific.py --home ../bench-home --runs-dir ../bench-runs/protocols \\
        [--methods sasrec,idasr,idasr-id,lshsr] [--seeds 3] [--protocols full,full-masked,pop100,uniform100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2018-unisrec" / "Scientific"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--home", type=Path, required=True, help="RECBENCH_HOME (datasets, negatives, embeddings)")
    parser.add_argument("--runs-dir", type=Path, required=True)
    parser.add_argument("--methods", default="sasrec,idasr,idasr-id,lshsr")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--protocols", default="full,full-masked,pop100,uniform100")
    parser.add_argument("--metrics", default="hr@10,ndcg@10,hr@50,ndcg@50")
    parser.add_argument("--timing-only", action="store_true", help="only time the evaluations of finished runs")
    args = parser.parse_args()
    os.environ["RECBENCH_HOME"] = str(args.home.resolve())

    from recbench.compare import compare
    from recbench.data.dataset import is_downloaded
    from recbench.data.download import import_local

    if not is_downloaded("scientific"):
        imported = import_local("scientific", args.source)
        print(f"imported scientific: {imported.dataset.counts}; mismatches: {imported.mismatches or 'none'}")
    protocols = args.protocols.split(",")
    metrics = args.metrics.split(",")
    if not args.timing_only:
        report, outcomes = compare(
            ["scientific"],
            args.methods.split(","),
            seeds=args.seeds,
            runs_dir=args.runs_dir,
            device="cpu",
            metrics=metrics,
            out=str(args.runs_dir / "report"),
            formats=("md", "json"),
            live=False,
            protocols=protocols,
        )
        failed = [o for o in outcomes if o.error]
        for outcome in failed:
            print(f"failed: {outcome.cell}: {outcome.error}")
        reports = {protocols[0]: report, **report.others}
        print(movement_table(reports, metrics))
        for name, shown in reports.items():
            print(f"\n## {name}\n\n{shown.to_markdown()}")
    print(timing(args.runs_dir, protocols))


def movement_table(reports: dict, metrics: list[str]) -> str:
    """Mean of each metric per method and protocol, its change from the first protocol, and the order."""
    names = list(reports)
    first = reports[names[0]]
    lines = ["| method | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for method in first.methods:
        for metric in metrics:
            values = []
            base = first.cell("scientific", method)
            for name in names:
                cell = reports[name].cell("scientific", method)
                if cell is None or cell.failed:
                    values.append("-")
                    continue
                value = cell.mean[metric]
                change = (
                    f" ({(value / base.mean[metric] - 1) * 100:+.1f}%)"
                    if name != names[0] and base and not base.failed and base.mean[metric]
                    else ""
                )
                values.append(f"{value:.4f}{change}")
            lines.append(f"| {method} | {metric} | " + " | ".join(values) + " |")
    for metric in metrics:
        orders = []
        for name in names:
            cells = [c for c in reports[name].cells if not c.failed]
            ranked = sorted(cells, key=lambda c: -c.mean[metric])
            orders.append(f"{name}: " + " > ".join(c.method for c in ranked))
        lines.append(f"\norder by {metric}: " + "; ".join(orders))
    return "\n".join(lines)


def timing(runs_dir: Path, protocols: list[str]) -> str:
    """Seconds of one test evaluation of a finished SASRec run under each protocol (median of 3)."""
    import torch

    from recbench.data.dataset import load_dataset
    from recbench.registry import get_method, resolve_config
    from recbench.runs.evaluate import Evaluator
    from recbench.runs.experiment import build_method
    from recbench.runs.protocols import get_protocol
    from recbench.runs.record import find_runs

    runs = [r for r in find_runs(runs_dir) if r.config.get("method") == "sasrec"] if runs_dir.is_dir() else []
    entry = get_method("sasrec")
    dataset = load_dataset("scientific")
    # Scoring costs the same whatever the weights: without a finished run, an untrained (seeded) model is timed.
    config = resolve_config(entry, runs[0].config["config"]) if runs else resolve_config(entry)
    torch.manual_seed(0)
    method = build_method(entry, config, dataset)
    if runs:
        method.load_state_dict(runs[0].load_best())
    what = runs[0].path if runs else "an untrained SASRec (published config)"
    lines = [f"\ntiming: one test evaluation of {what}, {torch.get_num_threads()} threads, median of 3"]
    for name in protocols:
        started = time.perf_counter()
        evaluator = Evaluator(dataset, "test", config.max_seq_length, config.eval_batch_size, get_protocol(name))
        setup = time.perf_counter() - started  # includes drawing (or reading) the negatives
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            evaluator.run(method)
            seconds.append(time.perf_counter() - started)
        lines.append(f"  {name}: {statistics.median(seconds):.3f} s (set-up {setup:.3f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
