"""Benchmark: encoding Scientific's item texts with the default encoder, float32 vs bfloat16.

Imports Scientific (UniSRec files, default ``../shared/data/amazon2018-unisrec/Scientific``,
never copied into the project) into a temporary RECBENCH_HOME, encodes every item text with each
precision (cache misses), then once more (a cache hit), and prints seconds, items/s and the
smallest cosine between the bfloat16 and float32 vectors of an item.

    HF_HUB_OFFLINE=1 python benchmarks/encode_speed.py [--threads 2] [--encoder all-MiniLM-L6-v2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2018-unisrec" / "Scientific"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    os.environ["RECBENCH_HOME"] = tempfile.mkdtemp(prefix="recbench-encode-")
    import numpy as np
    import torch

    from recbench.data.download import import_local
    from recbench.data.encode import EncoderSpec, item_embeddings, load_encoder

    torch.set_num_threads(args.threads)
    dataset = import_local("scientific", args.source).dataset
    print(f"{dataset.num_items:,} item texts, {args.encoder}, {torch.get_num_threads()} torch threads")
    tables = {}
    for precision in ("float32", "bfloat16"):
        spec = EncoderSpec(args.encoder, precision=precision)
        encoder = load_encoder(spec)  # loading the weights is not part of the encoding time
        started = time.perf_counter()
        tables[precision], cached = item_embeddings(dataset, spec, encoder=encoder, show_progress=False)
        seconds = time.perf_counter() - started
        assert not cached
        print(f"{precision:>9}: {seconds:6.1f} s, {dataset.num_items / seconds:5.0f} items/s")
    started = time.perf_counter()
    _, cached = item_embeddings(dataset, EncoderSpec(args.encoder), show_progress=False)
    print(f"cache hit: {time.perf_counter() - started:.3f} s (cached={cached})")
    a, b = tables["float32"][1:], tables["bfloat16"][1:]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"cosine(bfloat16, float32): min {cosine.min():.5f}, mean {cosine.mean():.5f}")


if __name__ == "__main__":
    main()
