"""Benchmark: where one training epoch of a method goes (batching, forward + loss, backward, optimizer step).

Builds ``--method`` from scratch on ``--dataset`` (the resolved config, with ``--set`` overrides),
then runs ``--epochs`` training epochs the way the Trainer does: the same batches (its
``TrainingWindows`` with the config's window, batch size and ``bucket_by_length``, one generator per
epoch) and the same fused Adam at the config's learning rate. No gradient clipping and no schedule
hooks: a method whose ``on_epoch_start`` freezes parameters is timed with all of them training. It
times each phase of every step with wall clocks and prints seconds per epoch for each phase and in
all (no validation).

To measure a code change, run it on the commit before and the commit after, one after the other on
the same machine, and compare the ``epoch`` column; ``baselines_speed.py`` compares against RecBole.

    python benchmarks/epoch_phases.py --method fpmc [--epochs 5] [--set key=value ...]
        [--dataset scientific] [--home DIR] [--threads 1] [--seed 2020]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

PHASES = ("batching", "forward + loss", "backward", "optimizer step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", required=True)
    parser.add_argument("--dataset", default="scientific")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--home", type=Path, default=None, help="RECBENCH_HOME (default: the environment's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config key=value")
    args = parser.parse_args()
    if args.home is not None:
        os.environ["RECBENCH_HOME"] = str(args.home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from recbench.data.dataset import load_dataset
    from recbench.registry import get_method, parse_assignments, resolve_config
    from recbench.runs.batching import TrainingWindows
    from recbench.runs.experiment import build_method
    from recbench.runs.trainer import denormals_flushed, seed_everything

    entry = get_method(args.method)
    config = resolve_config(entry, parse_assignments(args.overrides))
    dataset = load_dataset(args.dataset)
    seed_everything(args.seed)
    method = build_method(entry, config, dataset).train()
    windows = TrainingWindows(
        *dataset.train_sequences(), window=config.max_seq_length, samples=method.trains_on_samples
    )
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    seconds: dict[str, float] = defaultdict(float)
    with denormals_flushed("cpu"):
        for epoch in range(args.epochs):
            clock = time.perf_counter()
            batches = windows.batches(
                config.train_batch_targets, np.random.default_rng([args.seed, epoch]), config.bucket_by_length
            )
            seconds["batching"] += time.perf_counter() - clock
            for batch in batches:
                clock = time.perf_counter()
                loss = method.loss(batch)
                loss.item()  # the Trainer reads the loss every step
                seconds["forward + loss"] += time.perf_counter() - clock
                clock = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                seconds["backward"] += time.perf_counter() - clock
                clock = time.perf_counter()
                optimizer.step()
                seconds["optimizer step"] += time.perf_counter() - clock
    per_epoch = {phase: seconds[phase] / args.epochs for phase in PHASES}
    print(f"{args.method} on {args.dataset}, {args.epochs} epochs, {args.threads} thread(s); seconds per epoch")
    print("| " + " | ".join(PHASES) + " | epoch |")
    print("|" + "---|" * (len(PHASES) + 1))
    print("| " + " | ".join(f"{per_epoch[p]:.3f}" for p in PHASES) + f" | {sum(per_epoch.values()):.3f} |")


if __name__ == "__main__":
    main()
