"""Externally provided discrete item codes: imported from a faiss IVF-PQ index, cached, checked on read.

VQ-Rec's authors ship, per dataset, the faiss index their item codes came from (``pq.py``:
``OPQ{M},IVF1,PQ{M}x{bits}``, inner product, trained and filled on the BERT CLS vectors of the
"strict" items, those that occur in ``X.train.inter``). ``recbench encode DATASET --import-codes
INDEX --unisrec-dir DIR [--features FILE] --codes-name NAME`` (:func:`import_faiss_codes`) codes the
dataset's items with that index in one of two ways, recorded in the sidecar as ``coded_by``:

- **Every item's vector encoded by the index** (when the items' released vectors are at hand:
  ``DIR/X.feat1CLS``, or ``--features FILE``; raw float32 rows of the index's width ``d`` in
  ``X.item2index`` order). This is what the official fine-tuning does (RUCAIBox/VQ-Rec
  ``data/dataset.py``, ``VQRecDataset.load_index``): it reads the index, adds (``add``) the target's
  whole ``feat1CLS`` to it and takes the codes of the rows after the stored ones, so every item, strict or
  not, gets the code of its own vector (OPQ rotation, residual to the single IVF centroid, PQ), and
  item ``token`` (its ``X.item2index`` number) gets row ``int(token)``. Here the vectors are encoded
  with ``sa_encode`` on the root index, which gives the bytes ``add`` writes into the list (for an
  IVF1 index ``sa_encode`` writes no list number; tests/test_item_codes.py checks both on an index it
  trains). Feature row k is mapped to the item whose ``X.item2index`` number is k. The stored rows
  only serve a check: for the strict items, how many re-encoded codes equal their stored row (all of
  them when the features are the ones the index was filled with).
- **Index rows** (no vectors): the codes stored in the index's single inverted list. Row k of the
  list (the vector with id k) is the item whose UniSRec index (its number in ``DIR/X.item2index``) is
  the k-th smallest of the item indices that occur anywhere, history or target, in
  ``DIR/X.train.inter`` (``pq.py``: ``filter_id = sorted(item_set)``). Items that occur only in
  valid/test have no row (12 in Scientific); they are stored with ``has_code = False`` and the method
  decides how to code them (VQ-Rec: ``missing_codes``).

In both, the item's token is its key in ``X.item2index``; recbench's item ids carry those tokens
(``Dataset.item_ids``), so the mapping goes through tokens and survives items that recbench dropped
or renumbered. Packed bytes are unpacked by :func:`unpack_pq_codes`, as VQ-Rec unpacks the codes it
builds from text.

An entry lives next to the embedding cache, ``$RECBENCH_HOME/embeddings/<dataset>/codes/<NAME>.npz``
(``codes``: (N + 1, M) int32 raw codes in [0, 2**bits), ``has_code``: (N + 1,) bool; row 0 is the
padding item: zeros, no code) with a sidecar ``<NAME>.json`` recording the dataset fingerprint, the
source index's path, size and sha256, the UniSRec files' sha256, the rule used (``coded_by``,
``row_order``), the features file's path and sha256 and the strict-rows check (when vectors were
encoded), the import counts, the sha256 of the ``.npz`` file and a digest of its content
(:func:`codes_digest`, what a run's identity holds). Writes are atomic and made under the entry's
lock; a read checks the sidecar against the dataset, the file against its sha256 and the arrays
against their shapes, dtypes, ranges and digest. An entry that fails any check is refused with one
line (it cannot be rebuilt without its source): import it again.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recbench.data.catalog import recbench_home
from recbench.data.dataset import Dataset
from recbench.errors import DataError
from recbench.files import atomic_write_bytes, atomic_write_json, exclusive_lock
from recbench.names import check_name

CODES_FORMAT = 1
"""Version of the entry layout; a sidecar of another version is refused."""
DEFAULT_CODES_NAME = "official"
ARRAYS = ("codes", "has_code")


@dataclass(frozen=True)
class StoredCodes:
    """A checked item-codes entry: raw codes, which items have one, and its sidecar."""

    codes: np.ndarray
    """(N + 1, M) int32 in [0, num_codes); zeros for row 0 (padding) and for items without a code."""
    has_code: np.ndarray
    """(N + 1,) bool: False for row 0 and for items the source gave no code."""
    num_codes: int
    """K = 2**bits: values a code can take."""
    sha256: str
    """:func:`codes_digest` of the arrays: changes exactly when the codes (or the mask) change."""
    record: dict[str, Any]
    """The sidecar: provenance and import counts."""
    path: Path
    """The entry's ``.npz`` file."""


def unpack_pq_codes(packed: np.ndarray, code_dim: int, bits: int) -> np.ndarray:
    """(n, bytes) uint8 faiss PQ codes -> (n, code_dim) int64 codes in [0, 2**bits).

    faiss packs each code's bits least-significant first, codes one after another (``PQEncoderGeneric``;
    for 8 bits that is one byte per code), so unpacking little-endian bit order and regrouping by
    ``bits`` recovers them; trailing pad bits of the last byte are dropped.
    """
    rows = len(packed)
    unpacked = np.unpackbits(np.ascontiguousarray(packed, dtype=np.uint8), axis=1, bitorder="little")
    grouped = unpacked[:, : code_dim * bits].reshape(rows, code_dim, bits)
    return (grouped.astype(np.int64) << np.arange(bits)).sum(axis=-1)


def codes_digest(codes: np.ndarray, has_code: np.ndarray, num_codes: int) -> str:
    """sha256 over the shape, K, the codes (little-endian int32) and the mask: the content, not the file
    (an ``.npz`` holds zip timestamps, so two imports of the same codes give other file bytes)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"shape": list(codes.shape), "num_codes": int(num_codes)}).encode())
    digest.update(np.ascontiguousarray(codes, dtype="<i4").tobytes())
    digest.update(np.ascontiguousarray(has_code, dtype=np.uint8).tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks (an index can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --- reading a faiss index ---------------------------------------------------------------------
@dataclass(frozen=True)
class IndexCodes:
    """The codes stored in a one-list IVF-PQ index, row k = the vector added with id k."""

    codes: np.ndarray  # (n, M) int64 in [0, 2**bits)
    code_dim: int  # M
    bits: int
    description: str  # e.g. "IndexPreTransform(LinearTransform) + IndexIVFPQ(nlist 1, M 32, 8 bits)"
    dim: int = 0  # d: the width of the vectors the index encodes (768 for BERT)


def _open_ivf_pq(path: Path) -> tuple[Any, Any, list[str]]:
    """``(root, ivf_pq, layers)`` of a faiss ``[transforms ->] IndexIVFPQ`` with one inverted list whose
    stored codes have the size M and bits imply; :class:`DataError` in one line otherwise.

    ``root`` owns the wrapped indexes and their lists: keep it alive while ``ivf_pq`` is used
    (dropping it while reading the inner index frees that index under us: a segfault).
    """
    import faiss  # lazily: only item-code imports and VQ-Rec need it

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a faiss index)")
    try:
        root = faiss.read_index(str(path))
    except RuntimeError as err:
        # faiss prefixes its reason with the C++ function and source line: keep the reason only.
        message = " ".join(str(err).split())
        reason = re.search(r"\.cpp:\d+: (?:Error: )?(.*)", message)
        raise DataError(f"{path}: not a readable faiss index ({reason[1] if reason else message})") from None
    index = faiss.downcast_index(root)
    layers = []
    while isinstance(index, faiss.IndexPreTransform):  # OPQ (or any rotation) only changes the input
        chain = [faiss.downcast_VectorTransform(index.chain.at(i)) for i in range(index.chain.size())]
        layers.append(f"IndexPreTransform({', '.join(type(step).__name__ for step in chain)})")
        index = faiss.downcast_index(index.index)
    if not isinstance(index, faiss.IndexIVFPQ):
        raise DataError(
            f"{path}: a faiss {type(index).__name__}, not an IVF-PQ index "
            "(expected e.g. 'OPQ32,IVF1,PQ32x8', as VQ-Rec's pq.py builds)"
        )
    if index.nlist != 1:
        raise DataError(
            f"{path}: IVF-PQ with {index.nlist} inverted lists; only one list (IVF1) keeps every item's code "
            "comparable (with more, codes are residuals of different centroids)"
        )
    code_dim, bits = int(index.pq.M), int(index.pq.nbits)
    invlists = faiss.downcast_InvertedLists(index.invlists)
    expected_size = (code_dim * bits + 7) // 8
    if invlists.code_size != expected_size or index.code_size != expected_size:
        raise DataError(
            f"{path}: stored codes are {invlists.code_size} bytes each, but M = {code_dim} codes of {bits} bits "
            f"take {expected_size}: M/bits do not match the stored codes"
        )
    layers.append(f"IndexIVFPQ(nlist 1, M {code_dim}, {bits} bits)")
    return root, index, layers


def read_index_codes(path: Path) -> IndexCodes:
    """Read the stored codes of a faiss ``[transforms ->] IndexIVFPQ`` with one inverted list.

    Raises :class:`DataError` in one line if the file is not a faiss index, not IVF-PQ, has more
    than one list, stores codes of another size than M and bits imply, or ids other than 0..n-1.
    """
    import faiss

    path = Path(path)
    root, index, layers = _open_ivf_pq(path)
    code_dim, bits = int(index.pq.M), int(index.pq.nbits)
    invlists = faiss.downcast_InvertedLists(index.invlists)
    count = int(invlists.list_size(0))
    if count != index.ntotal:
        raise DataError(f"{path}: list 0 holds {count:,} codes but the index counts {index.ntotal:,}")
    if count == 0:
        raise DataError(f"{path}: the index holds no codes (it was trained but nothing was added)")
    ids, packed = _list_content(invlists, count)
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(ids[order], np.arange(count)):
        raise DataError(
            f"{path}: stored ids are not 0..{count - 1} (e.g. {int(ids[order][0])} .. {int(ids[order][-1])}); "
            "rows cannot be matched to items"
        )
    codes = unpack_pq_codes(packed[order], code_dim, bits)
    return IndexCodes(codes, code_dim, bits, " + ".join(layers), int(root.d))


def encode_with_index(path: Path, vectors: np.ndarray, block: int = 16384) -> np.ndarray:
    """(n, d) float32 vectors -> (n, M) int64 codes in [0, 2**bits): ``sa_encode`` of the root index.

    The root applies the index's transforms (OPQ's rotation) and the IVF-PQ encodes the residual to
    its single centroid: the bytes ``index.add`` would store for these vectors, as the official
    fine-tuning codes the target's items. Encoded ``block`` rows at a time (the rotation copies them).
    """
    root, index, _ = _open_ivf_pq(Path(path))
    if vectors.ndim != 2 or vectors.shape[1] != root.d:
        raise DataError(f"{path}: the index encodes vectors of {root.d} dims, got an array of shape {vectors.shape}")
    code_dim, bits = int(index.pq.M), int(index.pq.nbits)
    parts = [
        unpack_pq_codes(
            root.sa_encode(np.ascontiguousarray(vectors[start : start + block], dtype=np.float32)), code_dim, bits
        )
        for start in range(0, len(vectors), block)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, code_dim), dtype=np.int64)


def _list_content(invlists: Any, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, packed codes) of list 0, copied out; the list's buffers are released even on error."""
    import faiss

    ids_pointer = codes_pointer = None
    try:
        ids_pointer = invlists.get_ids(0)
        codes_pointer = invlists.get_codes(0)
        ids = faiss.rev_swig_ptr(ids_pointer, count).copy()  # copies: the pointers die with the index
        packed = faiss.rev_swig_ptr(codes_pointer, count * invlists.code_size).copy()
    finally:
        if ids_pointer is not None:
            invlists.release_ids(0, ids_pointer)
        if codes_pointer is not None:
            invlists.release_codes(0, codes_pointer)
    return ids.astype(np.int64), packed.reshape(count, invlists.code_size)


# --- the UniSRec files -------------------------------------------------------------------------
@dataclass(frozen=True)
class UnisrecFiles:
    """What the import reads of a UniSRec directory."""

    prefix: str  # X of X.train.inter
    tokens: list[str]  # every item's token by its X.item2index number (the feature rows' order)
    strict: list[str]  # tokens of the items of X.train.inter in increasing number (the index rows' order)
    sha256: dict[str, str]  # file name -> sha256 of X.train.inter and X.item2index


def read_unisrec_files(directory: Path) -> UnisrecFiles:
    """Read ``DIR/X.item2index`` and ``DIR/X.train.inter``: the item tokens in both orders."""
    # Lazily: the importers pull in pandas, which VQ-Rec (importing this module) has no use for.
    from recbench.data.ingest import _single_prefix, read_index, read_unisrec_inter

    directory = Path(directory)
    prefix = _single_prefix(directory, ".train.inter")
    item2index = directory / f"{prefix}.item2index"
    train = directory / f"{prefix}.train.inter"
    if not item2index.is_file():
        raise DataError(f"missing file {item2index} (its keys name the items of {train.name})")
    tokens = read_index(item2index)
    rows = read_unisrec_inter(train, num_items=len(tokens))
    used = {item for user_rows in rows.values() for history, target, _ in user_rows for item in (*history, target)}
    files = {p.name: file_sha256(p) for p in (train, item2index)}
    return UnisrecFiles(prefix, tokens, [tokens[i] for i in sorted(used)], files)


def strict_item_tokens(directory: Path) -> tuple[list[str], dict[str, str]]:
    """Tokens of the items of ``DIR/X.train.inter`` in increasing UniSRec index (the index rows' order),
    and the sha256 of the two files read (``X.train.inter``, ``X.item2index``)."""
    files = read_unisrec_files(directory)
    return files.strict, files.sha256


FEATURES_SUFFIX = "feat1CLS"
"""The released vectors the official fine-tuning encodes (``plm_suffix`` of VQ-Rec's props/VQRec.yaml)."""
CODED_BY_VECTORS = "every item's vector encoded by the index"
CODED_BY_ROWS = "index rows"


# --- the cache entry ---------------------------------------------------------------------------
def codes_path(dataset: Dataset, name: str) -> Path:
    """The entry (``.npz``; its sidecar is the ``.json`` beside it) of item codes ``name`` of ``dataset``."""
    dataset_dir = check_name("dataset", dataset.name)
    return recbench_home() / "embeddings" / dataset_dir / "codes" / f"{check_name('item codes', name)}.npz"


def import_faiss_codes(
    dataset: Dataset,
    index_file: Path,
    unisrec_dir: Path,
    name: str = DEFAULT_CODES_NAME,
    features: Path | None = None,
) -> StoredCodes:
    """Code ``dataset``'s items with a one-list IVF-PQ faiss index and store the codes as entry ``name``.

    With vectors (``features``, else ``DIR/X.feat1CLS`` if present) every item is coded by encoding
    its vector with the index, as the official fine-tuning does; without, the index's stored rows are
    mapped to the strict items (see the module docstring). Raises :class:`DataError` (one line) when
    the index is not IVF-PQ, its row count differs from the number of items in ``X.train.inter``, one
    of those items is not in ``dataset``, or the features file is not one float32 row of the index's
    width per item of ``X.item2index``. Replaces an earlier entry of the same name.
    """
    check_name("item codes", name)
    index_file, unisrec_dir = Path(index_file), Path(unisrec_dir)
    stored = read_index_codes(index_file)
    unisrec = read_unisrec_files(unisrec_dir)
    tokens = unisrec.strict
    if len(tokens) != len(stored.codes):
        raise DataError(
            f"{index_file}: {len(stored.codes):,} code rows but {', '.join(unisrec.sha256)} in {unisrec_dir} "
            f"name {len(tokens):,} training items; the index was not built from these files"
        )
    id_of = {token: item for item, token in enumerate(dataset.item_ids, start=1)}
    unknown = [token for token in tokens if token not in id_of]
    if unknown:
        raise DataError(
            f"{unisrec_dir}: {len(unknown):,} of the index's {len(tokens):,} items are not items of dataset "
            f"'{dataset.name}' (e.g. {unknown[0]!r}); import the dataset from the same UniSRec files"
        )
    if features is None and (unisrec_dir / f"{unisrec.prefix}.{FEATURES_SUFFIX}").is_file():
        features = unisrec_dir / f"{unisrec.prefix}.{FEATURES_SUFFIX}"
    ids = np.array([id_of[token] for token in tokens], dtype=np.int64)  # the strict items, in row order
    codes = np.zeros((dataset.num_items + 1, stored.code_dim), dtype=np.int32)
    has_code = np.zeros(dataset.num_items + 1, dtype=bool)
    record: dict[str, Any] = {
        "format": CODES_FORMAT,
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint,
        "name": name,
        "kind": "faiss IVF-PQ",
        "index": stored.description,
        "source": str(index_file.resolve()),
        "source_bytes": index_file.stat().st_size,
        "source_sha256": file_sha256(index_file),
        "unisrec_dir": str(unisrec_dir.resolve()),
        "unisrec_sha256": unisrec.sha256,
    }
    if features is None:
        codes[ids] = stored.codes
        has_code[ids] = True
        record["coded_by"] = CODED_BY_ROWS
        record["row_order"] = "row k = the item with the k-th smallest UniSRec index among the items of X.train.inter"
    else:
        encoded = _encode_features(Path(features), index_file, stored.dim, unisrec)
        position = {token: k for k, token in enumerate(unisrec.tokens)}
        absent = [token for token in dataset.item_ids if token not in position]
        if absent:
            raise DataError(
                f"{unisrec_dir}: {len(absent):,} items of dataset '{dataset.name}' are not in "
                f"{unisrec.prefix}.item2index (e.g. {absent[0]!r}), so they have no feature row; import the "
                "dataset from the same UniSRec files"
            )
        codes[1:] = encoded[[position[token] for token in dataset.item_ids]]
        has_code[1:] = True
        # The stored rows are not used, as in the official fine-tuning; they check the vectors instead.
        agreeing = int((codes[ids] == stored.codes).all(axis=1).sum())
        features = Path(features)
        record["coded_by"] = CODED_BY_VECTORS
        record["row_order"] = (
            f"feature row k = the item with UniSRec index k in {unisrec.prefix}.item2index, coded by sa_encode of "
            "the index (its transforms, the residual to its single list's centroid, PQ): the official "
            "fine-tuning's index.add of the target's feat1CLS and pq_codes[int(token)]"
        )
        record["features"] = str(features.resolve())
        record["features_bytes"] = features.stat().st_size
        record["features_sha256"] = file_sha256(features)
        record["features_rows"] = len(encoded)
        record["strict_rows"] = len(ids)
        record["strict_rows_equal"] = agreeing
    training = np.zeros(dataset.num_items + 1, dtype=bool)
    training[dataset.train_sequences()[1]] = True
    strict = np.zeros(dataset.num_items + 1, dtype=bool)
    strict[ids] = True
    without = [dataset.item_ids[item - 1] for item in np.flatnonzero(~has_code[1:]) + 1]
    _, inverse, counts = np.unique(codes[has_code], axis=0, return_inverse=True, return_counts=True)
    record |= {
        "code_dim": stored.code_dim,
        "bits": stored.bits,
        "num_codes": 2**stored.bits,
        "items": dataset.num_items,
        "items_with_code": int(has_code.sum()),
        "items_without_code": len(without),
        "without_code": without,
        "distinct_code_rows": len(counts),
        "items_sharing_a_code": int((counts[inverse.reshape(-1)] > 1).sum()),
        # The index's rows are X.train.inter's items; the row order (and, with vectors, the strict-rows
        # check) assumes those are the dataset's training items: say how far that holds.
        "coded_but_not_training": int((strict & ~training).sum()),
        "training_but_without_code": int((training & ~strict).sum()),
    }
    path = codes_path(dataset, name)
    with exclusive_lock(path.with_suffix(".lock"), f"item codes '{name}' of '{dataset.name}'", wait=True):
        return _store(path, codes, has_code, 2**stored.bits, record)


def _encode_features(features: Path, index_file: Path, dim: int, unisrec: UnisrecFiles) -> np.ndarray:
    """(rows of X.item2index, M) codes of a raw float32 features file, row k = the item numbered k."""
    from recbench.data.release import read_features  # UniSRec's np.fromfile(...).reshape(-1, d), checked

    if not features.is_file():
        raise DataError(f"{features}: no such file (expected raw float32 item vectors, e.g. X.{FEATURES_SUFFIX})")
    vectors = read_features(features, dim, len(unisrec.tokens))
    return encode_with_index(index_file, vectors)


def _store(path: Path, codes: np.ndarray, has_code: np.ndarray, num_codes: int, record: dict[str, Any]) -> StoredCodes:
    """Write the arrays, then the sidecar, each atomically (a kill in between leaves a mismatch: refused)."""
    np.savez(buffer := io.BytesIO(), codes=codes, has_code=has_code)
    data = buffer.getvalue()
    digest = codes_digest(codes, has_code, num_codes)
    sidecar = {
        **record,
        "shape": list(codes.shape),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_sha256": digest,
    }
    atomic_write_bytes(path, data)
    atomic_write_json(path.with_suffix(".json"), sidecar)
    return StoredCodes(codes, has_code, num_codes, digest, sidecar, path)


def load_item_codes(dataset: Dataset, name: str) -> StoredCodes:
    """The checked entry ``name`` of ``dataset``; a missing or damaged one is a :class:`DataError` (one line)."""
    path = codes_path(dataset, name)
    stored, problem, sidecar = _read(path, dataset, name)
    if stored is not None:
        return stored
    if problem is not None:  # perhaps an import was between its two writes: look again once it is done
        with exclusive_lock(path.with_suffix(".lock"), f"item codes '{name}' of '{dataset.name}'", wait=True):
            stored, problem, sidecar = _read(path, dataset, name)
        if stored is not None:
            return stored
    source, unisrec = sidecar.get("source", "INDEX_FILE"), sidecar.get("unisrec_dir", "DIR")
    again = f"recbench encode {dataset.name} --import-codes {source} --unisrec-dir {unisrec} --codes-name {name}"
    if problem is None:
        raise DataError(f"dataset '{dataset.name}' has no item codes '{name}' (no {path}); import them: `{again}`")
    raise DataError(f"item codes {path}: {problem}; not used, import them again: `{again}`")


def _read(path: Path, dataset: Dataset, name: str) -> tuple[StoredCodes | None, str | None, dict[str, Any]]:
    """``(entry, None, sidecar)`` if valid, else ``(None, problem, sidecar)``; ``(None, None, {})`` if absent."""
    sidecar_path = path.with_suffix(".json")
    if not path.is_file() and not sidecar_path.is_file():
        return None, None, {}
    try:
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no sidecar {sidecar_path.name}", {}
    except (ValueError, OSError) as err:
        return None, f"unreadable sidecar {sidecar_path.name} ({err})", {}
    if not isinstance(sidecar, dict):
        return None, f"sidecar {sidecar_path.name} is not a JSON object", {}
    if sidecar.get("format") != CODES_FORMAT:
        return None, f"sidecar format {sidecar.get('format')!r}, this recbench reads {CODES_FORMAT}", sidecar
    if sidecar.get("dataset") != dataset.name or sidecar.get("name") != name:
        return None, "its sidecar names another dataset or codes name", sidecar
    if sidecar.get("fingerprint") != dataset.fingerprint:
        return None, "the dataset changed since the codes were imported (its fingerprint differs)", sidecar
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"no {path.name} beside its sidecar", sidecar
    if hashlib.sha256(data).hexdigest() != sidecar.get("sha256"):
        return None, "its content does not match the sha256 in its sidecar (the file was changed or replaced)", sidecar
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)  # a pickle inside is refused, never run
        if not isinstance(archive, np.lib.npyio.NpzFile):
            return None, f"expected a .npz archive of {' and '.join(ARRAYS)}, found a single array", sidecar
        with archive:
            if sorted(archive.files) != sorted(ARRAYS):
                return None, f"expected a .npz archive of {' and '.join(ARRAYS)}, found {archive.files}", sidecar
            codes, has_code = archive["codes"], archive["has_code"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        return None, f"not a readable .npz archive ({type(err).__name__}: {err})", sidecar
    problem = _check_arrays(codes, has_code, sidecar, dataset.num_items)
    if problem is not None:
        return None, problem, sidecar
    num_codes = int(sidecar["num_codes"])
    digest = codes_digest(codes, has_code, num_codes)
    if digest != sidecar.get("content_sha256"):
        return None, "its arrays do not match the content digest in its sidecar", sidecar
    return StoredCodes(codes, has_code, num_codes, digest, sidecar, path), None, sidecar


def _check_arrays(codes: np.ndarray, has_code: np.ndarray, sidecar: dict[str, Any], num_items: int) -> str | None:
    """What is wrong with the arrays of an entry for a dataset of ``num_items`` items (None: nothing)."""
    num_codes, code_dim = sidecar.get("num_codes"), sidecar.get("code_dim")
    if type(num_codes) is not int or num_codes < 2 or type(code_dim) is not int or code_dim < 1:
        return "its sidecar records no valid num_codes / code_dim"
    if codes.dtype != np.int32 or codes.shape != (num_items + 1, code_dim):
        return f"codes are {codes.dtype} of shape {codes.shape}, expected int32 ({num_items + 1}, {code_dim})"
    if has_code.dtype != np.bool_ or has_code.shape != (num_items + 1,):
        return f"has_code is {has_code.dtype} of shape {has_code.shape}, expected bool ({num_items + 1},)"
    if codes.min() < 0 or codes.max() >= num_codes:
        return f"codes run from {codes.min()} to {codes.max()}, outside 0..{num_codes - 1}"
    if has_code[0] or codes[~has_code].any():
        return "the padding row or an item without a code holds a code"
    if int(has_code.sum()) != sidecar.get("items_with_code"):
        return f"{int(has_code.sum()):,} items have a code, its sidecar records {sidecar.get('items_with_code')}"
    return None
