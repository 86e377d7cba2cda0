"""Benchmark: AutoMLP's cost grows linearly with the history length T (50, 100, 200).

Times, on random data, (a) scoring a batch of full-length histories against all items and
(b) one training step (loss + backward) with one target per history, for AutoMLP (k fixed at 8)
and, for contrast, SASRec (self-attention, quadratic in T) at the same width. Prints seconds per
batch and the ratio to T = 50: linear cost doubles with T, quadratic cost quadruples.

    OMP_NUM_THREADS=1 python benchmarks/automlp_length_scaling.py [--lengths 50,100,200] [--batch 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.trainer import seed_everything


def seconds(step, repeats: int) -> float:
    """Median wall time of ``step()`` over ``repeats`` runs, after one warm-up."""
    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def measure(
    name: str, overrides: dict, length: int, batch_size: int, num_items: int, repeats: int
) -> tuple[float, float]:
    seed_everything(0)
    config = resolve_config(get_method(name), {"max_seq_length": length, "hidden_size": 64, **overrides})
    model = get_method(name).cls(config, DataSpec(num_items=num_items, max_seq_length=length))
    items = torch.randint(1, num_items + 1, (batch_size, length))
    lengths = torch.full((batch_size,), length)
    targets = torch.zeros_like(items)
    targets[:, -1] = torch.randint(1, num_items + 1, (batch_size,))  # one next-item target per history

    def score() -> None:
        with torch.no_grad():
            model.eval().score(Batch(items=items, lengths=lengths))

    def train_step() -> None:
        model.train().zero_grad()
        model.loss(Batch(items=items, lengths=lengths, targets=targets)).backward()

    return seconds(score, repeats), seconds(train_step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="50,100,200")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--items", type=int, default=4385, help="number of items (Scientific has 4,385)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    print(f"torch threads: {torch.get_num_threads()}; batch {args.batch} histories; {args.items} items; hidden 64")
    # automlp-id: the MLP cost alone (automlp's text fusion adds one Linear per item, independent of T)
    for name, overrides in (("automlp-id", {"short_length": 8}), ("sasrec", {})):
        base = None
        for length in lengths:
            score_s, train_s = measure(name, overrides, length, args.batch, args.items, args.repeats)
            base = base or (score_s, train_s)
            print(
                f"{name:8s} T={length:4d}: score {score_s * 1000:7.1f} ms (x{score_s / base[0]:.2f})   "
                f"train step {train_s * 1000:7.1f} ms (x{train_s / base[1]:.2f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
