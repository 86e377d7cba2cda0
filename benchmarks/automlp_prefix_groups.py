"""Benchmark: AutoMLP's training step with a batch's prefixes in length groups against one frame.

Every target position of an AutoMLP training window is its own right-aligned prefix row. With one
group (``PREFIX_GROUPS = 1``) every row of a batch is as wide as the batch's longest prefix; with
the default, rows are sorted by length and each group is as wide as its own longest prefix (the
same h, see ``AutoMLPBase.represent_prefixes``). Times one training step (loss + backward,
``automlp-id``, k = 8, the default 8 + 8 layers) on random windows of two shapes, both settings
in the same run, and prints the median seconds and their ratio:

- long: every window 51 items, so its 50 prefixes are 1..50 long (MovieLens-100K's users have about
  a hundred interactions each);
- short: window lengths uniform in 2..12 (Scientific's users have about seven).

    OMP_NUM_THREADS=1 python benchmarks/automlp_prefix_groups.py [--targets 2048] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.trainer import seed_everything
from recbench_plugins import automlp


def windows(shape: str, targets: int, num_items: int, generator: torch.Generator) -> Batch:
    """Random training windows of the given shape holding about ``targets`` target positions."""
    if shape == "long":
        lengths = torch.full((max(1, targets // 50),), 51)
    else:
        lengths = torch.randint(2, 13, (max(1, targets // 6),), generator=generator)
    width = int(lengths.max())
    inside = torch.arange(width)[None, :] < lengths[:, None]
    items = torch.randint(1, num_items + 1, (len(lengths), width), generator=generator) * inside
    has_target = torch.arange(width)[None, :] < (lengths - 1)[:, None]
    return Batch(items=items, lengths=lengths, targets=torch.roll(items, -1, dims=1) * has_target)


def step_seconds(batch: Batch, groups: int, num_items: int, repeats: int) -> float:
    """Median seconds of one loss + backward with ``groups`` prefix groups, after a warm-up."""
    automlp.PREFIX_GROUPS = groups
    seed_everything(0)
    config = resolve_config(get_method("automlp-id"), {"short_length": 8})
    model = automlp.AutoMLPID(config, DataSpec(num_items=num_items, max_seq_length=config.max_seq_length)).train()
    times = []
    for _ in range(repeats + 1):
        model.zero_grad()
        started = time.perf_counter()
        model.loss(batch).backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=2048, help="target positions per batch (the Trainer's default)")
    parser.add_argument("--items", type=int, default=1682, help="number of items (MovieLens-100K has 1,682)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    default_groups = automlp.PREFIX_GROUPS
    print(f"torch threads: {torch.get_num_threads()}; automlp-id, k = 8, {args.targets} target positions a batch")
    for shape in ("long", "short"):
        batch = windows(shape, args.targets, args.items, torch.Generator().manual_seed(0))
        one = step_seconds(batch, 1, args.items, args.repeats)
        grouped = step_seconds(batch, default_groups, args.items, args.repeats)
        print(
            f"{shape:5s} windows ({int((batch.targets > 0).sum())} targets): one frame {one:.3f} s, "
            f"{default_groups} length groups {grouped:.3f} s, {one / grouped:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
