"""Benchmark: one step of IDP's matcher tuning, texts padded to the step's longest vs in length groups.

A matcher step encodes, with gradients, two dropout views of ``matcher_batch_size`` anchor texts and
the distinct texts of their ``matcher_neighbours`` neighbours. This script draws such steps from the
Instruments stand-in's item texts (``../shared/data``, imported into ``--home`` if missing; anchors
and neighbours uniformly at random, which gives the same text lengths as the pre-trained neighbours),
and times forward + backward of the step's embeddings with all-MiniLM-L6-v2:

- ``one call``: the texts tokenised together, so every text is padded to the step's longest;
- ``grouped``: :func:`recbench_plugins.idp.embed_texts`, groups of similar token length.

It prints seconds per step and padded tokens per step (what the activations kept for the backward
pass scale with) for ordinary steps, and for one step that holds the longest text of the dataset
(that step is timed in one call only with ``--run-longest-one-call``: on the Instruments stand-in
such a step grew a tuning process past 23 GB and the kernel killed it).

    python benchmarks/idp_matcher_step.py --home H [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon2018-lcrec" / "Instruments"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=None, help="RECBENCH_HOME (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=3, help="ordinary steps timed per way")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--run-longest-one-call",
        action="store_true",
        help="also time the step with the longest text in one call (on the Instruments stand-in over 20 GB)",
    )
    args = parser.parse_args()
    os.environ["RECBENCH_HOME"] = str(args.home or tempfile.mkdtemp(prefix="recbench-bench-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from recbench.data.dataset import is_downloaded, load_dataset
    from recbench.data.download import import_local
    from recbench.data.encode import EncoderSpec, load_encoder
    from recbench.registry import get_method
    from recbench_plugins.idp import embed_texts, text_tokenizer

    torch.set_num_threads(args.threads)
    if not is_downloaded("instruments-lcrec"):
        import_local("instruments-lcrec", SOURCE)
    texts = [text for text in load_dataset("instruments-lcrec").item_texts if text and text.strip()]
    defaults = get_method("idp").cls.Config()
    batch, k = defaults.matcher_batch_size, defaults.matcher_neighbours
    encoder = load_encoder(EncoderSpec()).train()
    tokenize = text_tokenizer(encoder)
    lengths = tokenize(texts)["attention_mask"].sum(dim=1)
    longest = int(lengths.argmax())

    def step_texts(generator: torch.Generator, with_longest: bool) -> list[str]:
        anchors = torch.randint(len(texts), (batch,), generator=generator)
        if with_longest:
            anchors[0] = longest
        neighbours = torch.randint(len(texts), (batch * k,), generator=generator).unique()
        return [texts[i] for i in anchors.tolist()] * 2 + [texts[i] for i in neighbours.tolist()]

    def one_call(step: list[str]) -> torch.Tensor:
        features = tokenize(step)
        return encoder(features)["sentence_embedding"]

    padded: list[int] = []  # padded tokens of each encoder call of the current step, as the encoder saw them
    forward = encoder.forward

    def counting_forward(features: dict) -> dict:
        padded.append(int(features["input_ids"].numel()))
        return forward(features)

    encoder.forward = counting_forward

    print(
        f"{len(texts)} texts, tokens median {int(lengths.median())}, longest {int(lengths.max())}; "
        f"steps of {batch} anchors x 2 views + their distinct neighbours (k = {k}); {args.threads} thread(s)"
    )
    print("| step | way | texts | padded tokens | seconds |")
    print("|---|---|---|---|---|")
    for with_longest, count in ((False, args.steps), (True, 1)):
        for grouped in (False, True):
            generator = torch.Generator().manual_seed(0)
            for _ in range(count):
                step = step_texts(generator, with_longest)
                if with_longest and not grouped and not args.run_longest_one_call:
                    tokens = tokenize(step)["input_ids"].numel()  # one call pads every text to the longest
                    print(f"| with the longest text | one call | {len(step)} | {tokens} | not run |", flush=True)
                    continue
                padded.clear()
                started = time.perf_counter()
                embedded = embed_texts(encoder, step) if grouped else one_call(step)
                embedded.square().sum().backward()
                seconds = time.perf_counter() - started
                encoder.zero_grad(set_to_none=True)
                label = "with the longest text" if with_longest else "ordinary"
                way = "grouped" if grouped else "one call"
                print(f"| {label} | {way} | {len(step)} | {sum(padded)} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
