"""Benchmark: import VQ-Rec's official item codes for Scientific (no training, no encoding).

Imports UniSRec's Scientific files (default ``../shared/data/amazon2018-unisrec/Scientific``) into a
temporary ``RECBENCH_HOME`` (or ``--home``), then the official faiss index
(default ``../shared/data/vqrec-official-codes/Scientific.OPQ32,IVF1,PQ32x8.strict.index``) as item
codes, exactly as ``recbench encode scientific --import-codes INDEX --unisrec-dir DIR`` does. Neither
file is copied into the project. Prints the items mapped, the items without a code, the distinct
code rows and the items sharing their full code with another, next to what the index's
PROVENANCE.md states, a text check of the row order (items sharing a full code should have
near-duplicate texts) and the seconds of the import and of one checked read of the stored entry.

    python benchmarks/vqrec_official_codes.py [--from DIR] [--index FILE] [--home DIR] [--name NAME]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_SOURCE = SHARED / "amazon2018-unisrec" / "Scientific"
DEFAULT_INDEX = SHARED / "vqrec-official-codes" / "Scientific.OPQ32,IVF1,PQ32x8.strict.index"
# What PROVENANCE.md of the official index states (measured there with faiss read_index).
EXPECTED = {
    "items_with_code": 4373,
    "items_without_code": 12,
    "distinct_code_rows": 4223,
    "items_sharing_a_code": 242,
    "source_sha256": "7492526b0635c6017dd8e647359522d9d7d61b38c28b7c06d1d1fecc01bebb80",
}


def show(value: object) -> str:
    """A count with thousands separators, anything else as it is."""
    return f"{value:,}" if isinstance(value, int) else str(value)


def text_check(dataset, codes: np.ndarray, has_code: np.ndarray, samples: int = 2000) -> tuple[float, float, float]:
    """Mean word Jaccard of the texts of items sharing a full code, of those pairs with one id shifted by
    one, and of random coded pairs: independent of faiss, it tells a right row order from a wrong one,
    since the official codes quantise BERT vectors of the texts (items sharing one are near-duplicates)."""
    words = [set((text or "").lower().split()) for text in dataset.item_texts]

    def jaccard(a: int, b: int) -> float:
        union = words[a - 1] | words[b - 1]
        return len(words[a - 1] & words[b - 1]) / max(len(union), 1)

    coded = np.flatnonzero(has_code)
    _, group = np.unique(codes[coded], axis=0, return_inverse=True)
    group = group.reshape(-1)
    pairs = []
    for members in (coded[group == g] for g in np.flatnonzero(np.bincount(group) > 1)):
        pairs += [(int(members[0]), int(other)) for other in members[1:]]
    rng = np.random.default_rng(0)
    random = [jaccard(*map(int, rng.choice(coded, 2, replace=False))) for _ in range(samples)]
    shifted = [jaccard(a % dataset.num_items + 1, b) for a, b in pairs]
    return float(np.mean([jaccard(a, b) for a, b in pairs])), float(np.mean(shifted)), float(np.mean(random))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="source", type=Path, default=DEFAULT_SOURCE, help="UniSRec Scientific files")
    parser.add_argument("--index", type=Path, default=DEFAULT_INDEX, help="the official faiss index")
    parser.add_argument("--home", type=Path, default=None, help="RECBENCH_HOME (default: a new temporary one)")
    parser.add_argument("--name", default="official", help="the name the codes are stored under")
    args = parser.parse_args()

    # recbench reads RECBENCH_HOME whenever it builds a path: a temporary one keeps the user's cache untouched.
    os.environ["RECBENCH_HOME"] = str(args.home or tempfile.mkdtemp(prefix="recbench-bench-"))
    from recbench.data.codes import import_faiss_codes, load_item_codes
    from recbench.data.download import import_local

    started = time.perf_counter()
    dataset = import_local("scientific", args.source).dataset
    seconds = time.perf_counter() - started
    print(f"ingest: {dataset.counts} in {seconds:.2f} s (RECBENCH_HOME {os.environ['RECBENCH_HOME']})")

    started = time.perf_counter()
    stored = import_faiss_codes(dataset, args.index, args.source, args.name)
    imported = time.perf_counter() - started
    started = time.perf_counter()
    again = load_item_codes(dataset, args.name)
    read = time.perf_counter() - started
    assert again.sha256 == stored.sha256

    record = stored.record
    print(f"index: {record['index']}; {record['code_dim']} codes x {record['bits']} bits per item")
    for key, expected in EXPECTED.items():
        mark = "ok" if record[key] == expected else "DIFFERS"
        print(f"{key}: {show(record[key])} (PROVENANCE.md: {show(expected)}) {mark}")
    print(f"items of the dataset: {record['items']:,}; without a code: {', '.join(record['without_code'])}")
    print(
        f"coded but not training items: {record['coded_but_not_training']}; "
        f"training items without a code: {record['training_but_without_code']}"
    )
    same, shifted, random = text_check(dataset, stored.codes, stored.has_code)
    print(
        f"text check, mean word Jaccard of item texts: pairs sharing a full code {same:.3f}, the same pairs with "
        f"the first item's id + 1 {shifted:.3f} (neighbouring ids are often related), random coded pairs {random:.3f}"
    )
    print(f"entry: {stored.path} (content sha256 {stored.sha256[:16]}...)")
    print(f"seconds: import {imported:.2f} (read index, map rows, store), checked read {read:.3f}")


if __name__ == "__main__":
    main()
