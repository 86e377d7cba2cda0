"""Benchmark: one LSH-SR item-table step (forward + backward) at Scientific's size.

LSH-SR rebuilds every item's hash-table vectors at each training step, and its straight-through
gradient to the hyperplanes weighs all 2^h codes of every item. This times, in one process and
alternating so that load on the machine hits all three alike:

- ``hard only``: the look-up with frozen hyperplanes (the floor: no gradient to them);
- ``recbench``: ``LearnableLSH`` as shipped (the gradient formed in the backward pass only);
- ``materialised``: the textbook form, hard + E - detach(E), with the expected vector E formed
  in the forward pass (what LSH-SR did before), as the baseline of the ratio.

It also prints the largest difference between the two hyperplane gradients (float32 rounding).
Random unit-norm text vectors stand in for the item texts: the cost does not depend on them.

    python benchmarks/lsh_gradient_speed.py [--items 4386] [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from recbench_plugins.lshsr import LearnableLSH


def materialised_step(lsh: LearnableLSH, text: torch.Tensor) -> torch.Tensor:
    """The straight-through output with E = sum_c P(c) table[c] formed in the forward pass."""
    projection = lsh.project(text)
    hard = lsh.tables[torch.arange(lsh.tables.shape[0]), lsh.codes(text)]
    scaled = projection / lsh.temperature
    log_prob = F.logsigmoid(scaled) @ lsh.code_bits.T + F.logsigmoid(-scaled) @ (1 - lsh.code_bits).T
    expected = torch.einsum("nmc,mcd->nmd", log_prob.exp(), lsh.tables.detach())
    return hard + expected - expected.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--items", type=int, default=4386, help="rows of the item table (Scientific: 4,385 items + padding)"
    )
    parser.add_argument("--text-size", type=int, default=384)
    parser.add_argument("--hyperplanes", type=int, default=10)
    parser.add_argument("--tables", type=int, default=3)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lsh = LearnableLSH(args.text_size, args.hyperplanes, args.tables, args.dim, temperature=1.0, table_std=0.02)
    lsh.reset_parameters()
    lsh.train()
    text = F.normalize(torch.randn(args.items, args.text_size), dim=-1)
    upstream = torch.randn(args.items, args.tables, args.dim)  # stands in for the gradient from the loss

    def step(forward: Callable[[], torch.Tensor], train_hyperplanes: bool = True) -> torch.Tensor:
        lsh.zero_grad(set_to_none=True)
        lsh.hyperplanes.requires_grad_(train_hyperplanes)
        (forward() * upstream).sum().backward()
        lsh.hyperplanes.requires_grad_(True)
        return lsh.hyperplanes.grad

    gradients = {
        name: step(forward).clone()
        for name, forward in (("recbench", lambda: lsh(text)), ("materialised", lambda: materialised_step(lsh, text)))
    }
    variants: dict[str, Callable[[], object]] = {
        "hard only": lambda: step(lambda: lsh(text), train_hyperplanes=False),
        "recbench": lambda: step(lambda: lsh(text)),
        "materialised": lambda: step(lambda: materialised_step(lsh, text)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    print(
        f"{args.items:,} items, {args.tables} tables x {2**args.hyperplanes:,} codes x {args.dim}, "
        f"{torch.get_num_threads()} thread(s), median of {args.repeats}"
    )
    baseline = statistics.median(seconds["materialised"])
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"{name:>12}: {median * 1000:7.1f} ms/step  ({baseline / median:.2f}x as fast as the materialised step)")
    difference = (gradients["recbench"] - gradients["materialised"]).abs().max().item()
    largest = gradients["materialised"].abs().max().item()
    print(f"hyperplane gradients: max |difference| {difference:.2e}, max |gradient| {largest:.2e}")


if __name__ == "__main__":
    main()
