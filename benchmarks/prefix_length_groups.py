"""Benchmark: one training step with a batch's samples encoded in length groups against one frame.

AutoMLP and BERT4Rec with ``training_input = "prefixes"`` encode every (prefix, target) sample of a
training window as its own row. With one group (``recbench.layers.LENGTH_GROUPS = 1``) every row of a
batch is as wide as its longest sample; with the default, rows are sorted by length and each group is
only as wide as its own longest row (the same outputs: ``recbench.layers.length_groups``). Times one
training step (loss + backward; ``automlp-id`` with k = 8 and its 8 + 8 layers, ``bert4rec`` at its
RecBole configuration) on random windows of two shapes, both settings in the same run, and prints the
median seconds and their ratio. ``s3rec`` times one pre-training step (its four losses) with its
samples left-padded to ``max_seq_length`` and encoded in one frame of that full width, as RecBole
(``S3Rec.encode``), against the length groups of ``S3Rec.encode_left_padded``:

- long: every window 51 items, so its 50 samples are 1..50 long (MovieLens-100K's users have about a
  hundred interactions each);
- short: window lengths uniform in 2..12 (Scientific's users have about seven).

    OMP_NUM_THREADS=1 python benchmarks/prefix_length_groups.py [--targets 2048] [--repeats 5] [--methods M,...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from recbench import layers
from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.trainer import seed_everything


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


METHODS = {"automlp-id": {"short_length": 8}, "bert4rec": {"training_input": "prefixes"}, "s3rec": {}}


def step_seconds(name: str, batch: Batch, groups: int, num_items: int, repeats: int) -> float:
    """Median seconds of one loss + backward of ``name`` with ``groups`` length groups, after a warm-up
    (``s3rec``: its pre-training loss; one group means the full ``max_seq_length`` frame)."""
    layers.LENGTH_GROUPS = groups
    seed_everything(0)
    entry = get_method(name)
    config = resolve_config(entry, METHODS[name])
    text = torch.randn(num_items + 1, 384) if entry.cls.needs_text else None
    spec = DataSpec(num_items=num_items, max_seq_length=config.max_seq_length, item_text_embeddings=text)
    model = entry.cls(config, spec).train()
    loss = model.loss
    if name == "s3rec":
        loss = model.pretrain_loss
        if groups == 1:  # the full-width frame every pre-training row had before the groups
            model.encode_left_padded = lambda tokens: model.encode(tokens, bidirectional=True)
    times = []
    for _ in range(repeats + 1):
        model.zero_grad()
        started = time.perf_counter()
        loss(batch).backward()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=2048, help="target positions per batch (the Trainer's default)")
    parser.add_argument("--items", type=int, default=1682, help="number of items (MovieLens-100K has 1,682)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    args = parser.parse_args()
    default_groups = layers.LENGTH_GROUPS
    print(f"torch threads: {torch.get_num_threads()}; {args.targets} target positions a batch")
    for name in args.methods.split(","):
        for shape in ("long", "short"):
            batch = windows(shape, args.targets, args.items, torch.Generator().manual_seed(0))
            one = step_seconds(name, batch, 1, args.items, args.repeats)
            grouped = step_seconds(name, batch, default_groups, args.items, args.repeats)
            rows = int((batch.targets > 0).sum())
            groups = len(layers.length_groups(torch.zeros(rows), default_groups))  # MIN_GROUP_ROWS may cap it
            print(
                f"{name:10s} {shape:5s} windows ({rows} targets): one frame {one:.3f} s, "
                f"{groups} length groups {grouped:.3f} s, {one / grouped:.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
