"""Benchmark: training steps from a stored run's weights with denormal floats flushed to zero or not.

x86 arithmetic on denormals (floats below 1.2e-38) is many times slower, and the Trainer flushes
them on CPU (``recbench.runs.trainer.denormals_flushed``; docs/architecture.md, "Speed"). This
script shows whether a run's weights produce them: it rebuilds the run's model on its dataset,
loads ``--weights`` (``checkpoint.pt``: the weights after the last finished epoch, or ``best.pt``),
and times ``--steps`` loss + backward passes on the first training batches (the pre-training
objective for a run under ``_pretrain/``), alternating unflushed and flushed ``--repeats`` times,
with the same random draws in each. It prints the seconds and the last loss of each pass, which
must agree between the modes.

With ``--flush-from-start`` the mode is switched on before torch's first parallel operation and
never off, so the intra-op worker threads started later inherit it (the mode belongs to a thread):
the figure to compare against the flushed passes of a run without it when ``--threads`` > 1.

    python benchmarks/denormal_steps.py RUN_DIR [--weights checkpoint.pt] [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--weights", default="checkpoint.pt", help="checkpoint.pt or best.pt of the run")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flush-from-start", action="store_true")
    args = parser.parse_args()
    if args.flush_from_start:
        torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)

    from recbench.data.dataset import load_dataset, load_run_dataset, union_of
    from recbench.registry import get_method, resolve_config
    from recbench.runs.batching import TrainingWindows
    from recbench.runs.experiment import build_method
    from recbench.runs.record import RunRecord

    record = RunRecord(args.run).config
    entry = get_method(record["method"])
    config = resolve_config(entry, record["config"])
    pretraining = record.get("stage") == "pretrain"
    if pretraining and record.get("on_target"):  # self-supervised pre-training on its target (S3-Rec)
        dataset = load_dataset(record["dataset"])
    elif pretraining:
        dataset = union_of([load_dataset(name) for name in record["sources"]])
    else:
        dataset = load_run_dataset(record)
    method = build_method(entry, config, dataset, pretraining=pretraining)
    state = torch.load(args.run / args.weights, map_location="cpu", weights_only=True)
    method.load_state_dict(state.get("model", state))
    method.train()
    windows = TrainingWindows(
        *dataset.train_sequences(), window=config.max_seq_length, samples=method.trains_on_samples
    )
    targets = config.pretrain_batch_targets if pretraining else config.train_batch_targets
    batches = windows.batches(targets, np.random.default_rng(0))[: args.steps]
    objective = method.pretrain_loss if pretraining else method.loss
    modes = [True] * 2 * args.repeats if args.flush_from_start else [False, True] * args.repeats
    for flushed in modes:
        if not args.flush_from_start:
            torch.set_flush_denormal(flushed)
        torch.manual_seed(1)
        started = time.perf_counter()
        for batch in batches:
            method.zero_grad(set_to_none=True)
            loss = objective(batch)
            loss.backward()
        how = "flushed from the start" if args.flush_from_start else ("flushed" if flushed else "not flushed")
        print(
            f"{record['method']} {args.run.name}, {how}: {time.perf_counter() - started:.1f} s for "
            f"{len(batches)} steps, last loss {loss.item():.4f} ({args.threads} thread(s))",
            flush=True,
        )


if __name__ == "__main__":
    main()
