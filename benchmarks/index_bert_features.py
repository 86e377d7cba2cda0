"""Benchmark helper: approximate BERT [CLS] item features of Scientific, decoded from VQ-Rec's official index.

The published text baselines of UniSRec's Table 2 (SASRec_T, FDSA, ...) read frozen bert-base-uncased
[CLS] vectors (``Scientific.feat1CLS``); this machine has neither that file nor the model. VQ-Rec's
official faiss index for Scientific (``OPQ32,IVF1,PQ32x8``, built by its ``pq.py`` from exactly those
vectors) is held, and a PQ index can decode its codes: each item's vector is rebuilt as the index's
one IVF centroid plus, per 24-dim sub-vector, the PQ centroid its code names, rotated back by OPQ's
orthonormal transform (faiss ``sa_decode``). The result is the BERT vector up to the quantisation
error (32 codes of 8 bits for 768 floats), not the vector itself: numbers measured with it say how
far the encoder, not the model, explains a gap to a published text row, and must be labelled as such.

To see what the quantisation alone costs, ``--control`` does the same to recbench's default MiniLM
features: it trains an index of the same kind and sub-vector width (``OPQ16,IVF1,PQ16x8``: 24 dims a
code, as 768 / 32) on them, decodes every item and stores the result as encoder
``all-MiniLM-L6-v2-pq-decoded`` (pooling mean); a method run on it next to one on the MiniLM features
measures the loss that decoding brings.

This script stores the decoded table as the embeddings of a named encoder (``--encoder-name``,
default ``vqrec-index-bert-cls``, pooling ``cls``) in ``--home``'s cache, as ``recbench encode
--import`` does; any text method then reads it with ``--set text_encoder=NAME --set text_pooling=cls``,
e.g. ``python benchmarks/baselines_scientific.py --home H --runs-dir R --methods sasrec-t --set
text_encoder=vqrec-index-bert-cls --set text_pooling=cls``. Items the index has no row for (12 in
Scientific: they occur only in valid / test) get the mean of the decoded vectors (the IVF centroid
plus the mean residual). It also prints a check: every decoded vector re-encodes to its own code.

The index is read from ``../shared/data/vqrec-official-codes/`` (never copied into the project).

    python benchmarks/index_bert_features.py --home ../bench-home
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from recbench.data.dataset import Dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
INDEX = SHARED / "vqrec-official-codes" / "Scientific.OPQ32,IVF1,PQ32x8.strict.index"
UNISREC_DIR = SHARED / "amazon2018-unisrec" / "Scientific"
CODES_NAME = "official"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="RECBENCH_HOME (datasets, embeddings)")
    parser.add_argument("--index", type=Path, default=INDEX)
    parser.add_argument("--encoder-name", default="vqrec-index-bert-cls", help="the name methods read it by")
    parser.add_argument("--control", action="store_true", help="also store PQ-decoded MiniLM features")
    args = parser.parse_args()
    os.environ["RECBENCH_HOME"] = str(args.home.resolve())

    import faiss

    from recbench.data.codes import encode_with_index, import_faiss_codes, load_item_codes
    from recbench.data.dataset import is_downloaded, load_dataset
    from recbench.data.download import import_local
    from recbench.data.encode import EncoderSpec, save_embeddings
    from recbench.errors import DataError

    if not is_downloaded("scientific"):
        import_local("scientific", UNISREC_DIR)
    dataset = load_dataset("scientific")
    try:
        stored = load_item_codes(dataset, CODES_NAME)
    except DataError:  # not imported yet (or damaged): import the index's rows as `encode --import-codes` does
        import_faiss_codes(dataset, args.index, UNISREC_DIR, name=CODES_NAME)
        stored = load_item_codes(dataset, CODES_NAME)
    if stored.num_codes != 256:
        raise SystemExit(f"expected 8-bit codes, the stored ones have {stored.num_codes} values")
    root = faiss.read_index(str(args.index))
    coded = np.flatnonzero(stored.has_code)  # item ids (row 0, the padding, has none)
    packed = np.ascontiguousarray(stored.codes[coded].astype(np.uint8))  # 8 bits a code: one byte each
    decoded = root.sa_decode(packed)  # (n, d): IVF centroid + PQ centroids, rotated back (OPQ)
    recoded = encode_with_index(args.index, decoded)
    agree = float((recoded == stored.codes[coded]).all(axis=1).mean())

    table = np.zeros((dataset.num_items + 1, root.d), dtype=np.float32)
    table[coded] = decoded
    missing = np.setdiff1d(np.arange(1, dataset.num_items + 1), coded)
    table[missing] = decoded.mean(axis=0)
    spec = EncoderSpec(args.encoder_name, "cls")
    path = save_embeddings(dataset, spec, table, f"decoded from {args.index.name} ({CODES_NAME} codes)")
    norms = np.linalg.norm(decoded, axis=1)
    unit = decoded / norms[:, None]
    mean_cosine = float((unit @ unit.mean(axis=0)).mean() / np.linalg.norm(unit.mean(axis=0)))
    print(
        f"scientific: {len(coded):,} items decoded from {args.index.name}, {len(missing)} without a row "
        f"(given the mean); {root.d} dims; re-encoded to their own code: {agree:.1%}; "
        f"norms {norms.mean():.2f} ± {norms.std():.2f}; mean cosine to the mean direction {mean_cosine:.3f}"
    )
    print(f"stored as encoder '{args.encoder_name}', pooling cls: {path}")
    if args.control:
        control(dataset, sub_dims=root.d // stored.codes.shape[1])


def control(dataset: Dataset, sub_dims: int) -> None:
    """Store the default MiniLM features decoded through an OPQ/PQ index of ``sub_dims`` dims a code."""
    import faiss

    from recbench.data.encode import EncoderSpec, item_embeddings, save_embeddings

    source = EncoderSpec()
    table, _ = item_embeddings(dataset, source, show_progress=False)
    vectors = np.ascontiguousarray(table[1:], dtype=np.float32)
    codes = vectors.shape[1] // sub_dims
    description = f"OPQ{codes},IVF1,PQ{codes}x8"
    index = faiss.index_factory(vectors.shape[1], description, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)  # faiss k-means starts from a fixed seed: the same index every run
    decoded = index.sa_decode(index.sa_encode(vectors))
    cosine = (vectors * decoded).sum(axis=1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(decoded, axis=1)
    out = np.zeros_like(table)
    out[1:] = decoded
    name = f"{source.name}-pq-decoded"
    path = save_embeddings(dataset, EncoderSpec(name, source.pooling), out, f"{source.name} through {description}")
    print(
        f"control: {source.name} ({vectors.shape[1]} dims) through {description}, decoded: cosine to the "
        f"original {cosine.mean():.3f} ± {cosine.std():.3f}; stored as encoder '{name}', pooling mean: {path}"
    )


if __name__ == "__main__":
    main()
