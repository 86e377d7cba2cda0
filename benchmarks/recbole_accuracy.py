"""Benchmark: a baseline trained to convergence by recbench and by RecBole 1.2.1, test metrics side by side.

Where a baseline has no published row on Scientific (FPMC, GRU4Rec, NextItNet, Caser, ...), RecBole's
own implementation is the independent check of recbench's number. For each method and seed this
trains recbench's plugin (``run_experiment``; a finished run in ``--runs-dir`` is reused) and
RecBole's model of the same name on the same UniSRec files, with the same sizes, learning rate,
batch size, epoch cap and early stopping (patience on valid NDCG@10: RecBole's ``stopping_step``
means what recbench's ``patience`` means), and prints test R@10 / N@10 / R@50 / N@50, epochs run
(best) and seconds per epoch for both. RecBole evaluates with its own full-ranking evaluator on the
best valid epoch's weights, so the comparison checks recbench's model, trainer and evaluator at once.

The RecBole side is built exactly as ``baselines_speed.py`` builds it (same ``Pair`` table, data
folder and config; see that script's docstring for the venv and the item-feature field), so the
methods are the ones listed there. ``--set`` overrides recbench's config; RecBole reads from that
resolved config only the keys the two share (model sizes, learning rate, batch sizes, epochs,
patience), so any other override (NextItNet's ``readout``, say) changes recbench's side only. One
RecBole training per (method, seed) runs in a subprocess of ``--recbole-python`` with ``--threads``
torch threads; its log, checkpoint and summary stay under ``--work``, and a finished one is reused.

    python benchmarks/recbole_accuracy.py --home ../bench-home --runs-dir ../bench-runs/baselines \\
        --work ../bench-runs/recbole-accuracy --methods fpmc,nextitnet [--seeds 2020,2021] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from baselines_scientific import summary
from baselines_speed import (
    DEFAULT_RECBOLE_PYTHON,
    DEFAULT_SOURCE,
    PAIRS,
    prepare_recbole_data,
    recbole_config,
    run_recbole,
)

DATASET = "scientific"
# recbench metric name -> RecBole's name for the same quantity (leave-one-out: one target, recall = hit rate).
METRICS = {"hr@10": "recall@10", "ndcg@10": "ndcg@10", "hr@50": "recall@50", "ndcg@50": "ndcg@50"}


def difference(per_tool: dict[str, list[dict[str, Any]]], metric: str) -> str:
    """RecBole's mean relative to recbench's, in %, and Welch's two-sided p over the seeds (2+ seeds each)."""
    ours = [r["test"][metric] for r in per_tool["recbench"]]
    theirs = [r["test"][metric] for r in per_tool["RecBole"]]
    delta = f"{100 * (statistics.mean(theirs) / statistics.mean(ours) - 1):+.1f}%"
    if min(len(ours), len(theirs)) < 2:
        return delta
    from scipy.stats import ttest_ind

    return f"{delta}, p = {ttest_ind(theirs, ours, equal_var=False).pvalue:.2f}"


def run_recbench(method: str, seed: int, overrides: dict[str, Any], runs_dir: Path) -> dict[str, Any]:
    """recbench's test metrics, epochs run, best epoch and seconds per epoch for one seed."""
    from recbench.runs.experiment import run_experiment

    result = run_experiment(
        method, DATASET, seed=seed, overrides=[overrides], runs_dir=runs_dir, device="cpu", show_progress=False
    )
    metrics, fit = result.run.metrics, result.run.metrics["fit"]
    return {
        "test": {name: float(metrics["test"][name]) for name in METRICS},
        "epochs": fit["epochs_run"],
        "best_epoch": fit.get("best_epoch"),
        "seconds_per_epoch": fit["seconds_per_epoch"],
    }


def recbole_settings(method: str, seed: int, config: Any, data_root: Path, work: Path) -> dict[str, Any]:
    """RecBole's config for training ``method`` to convergence (recbench's sizes, epochs and patience)."""
    settings = recbole_config(method, config, PAIRS[method], config.epochs, data_root, work)
    # RecBole rounds its metrics to 4 places by default; 6 keeps them comparable to recbench's.
    settings.update({"seed": seed, "stopping_step": config.patience, "metric_decimal_place": 6})
    return settings


def run_recbole_to_convergence(
    method: str, seed: int, config: Any, python: Path, data_root: Path, root: Path, threads: int
) -> dict[str, Any]:
    """RecBole's test metrics (recbench's names), epochs run, best epoch and seconds per epoch for one seed.

    Each training has its own folder under ``root``, named by method, seed and a digest of what
    RecBole is given (paths aside); a finished training left its summary there (``summary.json``)
    and is reused, as recbench reuses a finished run.
    """
    shown = recbole_settings(method, seed, config, data_root, root)
    for path_key in ("data_path", "checkpoint_dir"):
        shown.pop(path_key)
    digest = hashlib.sha256(json.dumps([PAIRS[method].recbole_model, shown], sort_keys=True).encode()).hexdigest()
    work = root / f"{method}-seed{seed}-{digest[:10]}"
    summary_path = work / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    work.mkdir(parents=True, exist_ok=True)
    settings = recbole_settings(method, seed, config, data_root, work)
    out = run_recbole(python, method, PAIRS[method].recbole_model, settings, work, threads, 0, None, test=True)
    times = out["fit"]["train"]
    result = {
        "test": {name: out["test"][theirs] for name, theirs in METRICS.items()},
        "epochs": len(times),
        "best_epoch": out["best_epoch"],
        "seconds_per_epoch": statistics.mean(times) if times else None,
    }
    summary_path.write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", required=True, help=f"comma-separated, from: {', '.join(PAIRS)}")
    parser.add_argument("--seeds", default="2020", help="comma-separated seeds, each trained by both tools")
    parser.add_argument("--home", type=Path, required=True, help="RECBENCH_HOME holding (or to hold) `scientific`")
    parser.add_argument("--runs-dir", type=Path, required=True, help="recbench runs (outside the project)")
    parser.add_argument("--work", type=Path, required=True, help="RecBole's data links, logs and checkpoints")
    parser.add_argument("--recbole-python", type=Path, default=DEFAULT_RECBOLE_PYTHON)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, each tool")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recbench config key=value")
    parser.add_argument("--skip-recbole", action="store_true", help="recbench's side only")
    args = parser.parse_args()

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in PAIRS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(PAIRS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    os.environ["RECBENCH_HOME"] = str(args.home.resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from recbench.data.dataset import is_downloaded
    from recbench.data.download import import_local
    from recbench.registry import get_method, parse_assignments, resolve_config

    if not is_downloaded(DATASET):
        import_local(DATASET, args.source)
    work = args.work.resolve()
    data_root = prepare_recbole_data(args.source.resolve(), work / "recbole-data")
    overrides = parse_assignments(args.overrides)

    rows: list[tuple[str, dict[str, list[dict[str, Any]]]]] = []
    for method in methods:
        config = resolve_config(get_method(method), overrides)
        per_tool: dict[str, list[dict[str, Any]]] = {"recbench": [], "RecBole": []}
        for seed in seeds:
            print(f"[{method} seed {seed}] recbench ...", file=sys.stderr, flush=True)
            per_tool["recbench"].append(run_recbench(method, seed, overrides, args.runs_dir))
            if not args.skip_recbole:
                print(f"[{method} seed {seed}] RecBole {PAIRS[method].recbole_model} ...", file=sys.stderr, flush=True)
                per_tool["RecBole"].append(
                    run_recbole_to_convergence(
                        method, seed, config, args.recbole_python, data_root, work / "recbole", args.threads
                    )
                )
            print(json.dumps({"method": method, "seed": seed, **per_tool}), file=sys.stderr, flush=True)
        rows.append((method, per_tool))

    print(f"\nScientific, full ranking, test split, seeds {args.seeds}, mean ± std; {args.threads} thread(s)")
    print("last row per method: RecBole's mean against recbench's (Δ%) and Welch's t-test over the seeds (p)\n")
    print("| method | tool | R@10 | N@10 | R@50 | N@50 | epochs (best, 0-based) | s/epoch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, per_tool in rows:
        for tool, results in per_tool.items():
            if not results:
                continue
            cells = [summary([r["test"][name] for r in results]) for name in METRICS]
            epochs = "/".join(f"{r['epochs']} ({r['best_epoch']})" for r in results)
            seconds = "/".join(f"{r['seconds_per_epoch']:.1f}" for r in results if r["seconds_per_epoch"] is not None)
            print(f"| {method} | {tool} | {' | '.join(cells)} | {epochs} | {seconds} |")
        if per_tool["RecBole"]:
            deltas = [difference(per_tool, name) for name in METRICS]
            print(f"| {method} | RecBole vs recbench | {' | '.join(deltas)} | | |")


if __name__ == "__main__":
    main()
