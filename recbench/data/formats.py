"""What every importer shares: the :class:`Imported` result, the import options, and line readers
that name the file and line of a bad byte. Importers (:mod:`recbench.data.ingest`,
:mod:`recbench.data.tables`, :mod:`recbench.data.amazon`) depend on this module, never on each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recbench.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq")


@dataclass
class Imported:
    """Raw material for :func:`recbench.data.dataset.build_dataset`."""

    user_ids: list[str]
    sequences: Sequence[Sequence[int] | np.ndarray]  # 0-based indices into item_ids, chronological
    item_ids: list[str]
    item_texts: list[str] | None
    format: str
    files: list[Path]
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # recorded in the dataset manifest
    deferred_texts: Callable[[list[str]], tuple[list[str], list[str]]] | None = None
    """Instead of ``item_texts``: item tokens -> (their texts, notes), called with the items left after
    the interaction filter only (reading the metadata of items the filter removes is wasted work)."""


@dataclass(frozen=True)
class ImportOptions:
    """Options of ``recbench download --from``; each format accepts only the ones it uses."""

    user_col: str | None = None
    """Interactions column holding the user (table, recbole)."""
    item_col: str | None = None
    """Interactions column holding the item (table, recbole)."""
    time_col: str | None = None
    """Interactions column holding the timestamp (table, recbole)."""
    item_text: Path | None = None
    """Item-text table: CSV/TSV/parquet/JSON lines keyed by item (table)."""
    text_fields: tuple[str, ...] | None = None
    """Item fields joined into the text, in this order (table, recbole)."""
    partial_text: bool = False
    """Use a text file that covers only some items, e.g. ``X.item.partial.json`` (lcrec)."""

    def given(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) not in (None, False)]


def nul_error(path: Path, line: int, column: int) -> DataError:
    """A NUL byte in a text file: a damaged (e.g. zero-filled after a crash) or binary file, never a token."""
    return DataError(f"{path}:{line}: NUL byte at byte {column} of the line (a damaged or binary file)")


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without newline) of a UTF-8 text file; bad bytes and NUL bytes name the line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if b"\0" in raw:
                raise nul_error(path, number, raw.index(b"\0"))
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


BLOCK_BYTES = 16 << 20  # large files are read in blocks of whole lines of about this size


def iter_line_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Blocks of whole lines (the last may lack its newline): big files without a Python loop per line."""
    with open(path, "rb") as f:
        carry = b""
        while chunk := f.read(block_bytes):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut:
                yield data[:cut]
            carry = data[cut:]
        if carry:
            yield carry


def decode_block(raw: bytes, path: Path, first_line: int) -> str:
    """UTF-8 text of a block whose first line is ``first_line``; bad bytes and NUL bytes name the file and line."""
    if (nul := raw.find(b"\0")) >= 0:
        raise nul_error(path, first_line + raw.count(b"\n", 0, nul), nul - (raw.rfind(b"\n", 0, nul) + 1))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + raw.count(b"\n", 0, err.start)
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1)
        raise DataError(f"{path}:{line}: not valid UTF-8 ({err.reason} at byte {column} of the line)") from None


def check_utf8(path: Path) -> None:
    """Raise :class:`DataError` naming file and line if ``path`` is not valid UTF-8 or holds a NUL byte."""
    line = 1
    for raw in iter_line_blocks(path):
        decode_block(raw, path, line)
        line += raw.count(b"\n")


def ends_without_newline(path: Path) -> bool:
    """Whether a non-empty file's last byte is not a newline (its last line may have been cut)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return False
        f.seek(-1, 2)
        return f.read(1) != b"\n"


def sequences_from_rows(
    users: np.ndarray, items: np.ndarray, times: np.ndarray | None
) -> tuple[list[str], list[np.ndarray], list[str]]:
    """Chronological per-user sequences (stable: ties keep file order), users and items by first appearance."""
    user_codes, user_tokens = pd.factorize(users)
    order = np.lexsort((times, user_codes)) if times is not None else np.argsort(user_codes, kind="stable")
    item_codes, item_tokens = pd.factorize(items[order])
    offsets = np.cumsum(np.bincount(user_codes, minlength=len(user_tokens)))[:-1]
    return [str(u) for u in user_tokens], np.split(item_codes.astype(np.int64), offsets), [str(i) for i in item_tokens]
