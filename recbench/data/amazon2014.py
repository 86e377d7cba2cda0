"""Amazon product data 2014 (McAuley et al., SIGIR 2015) ratings-only files -> canonical dataset.

The 2014 release (the "Beauty" of SASRec, BERT4Rec and AutoMLP) has per category:

- ``ratings_<Category>.csv``: ``user,item,rating,timestamp`` per line, no header (a copy with a
  header line, as some re-distributions add, is accepted: a first line whose last field is a word,
  such as ``Timestamp``, is taken as the header and named in the notes);
- ``meta_<Category>.json.gz``: one record per line, written as a **Python dict literal** (single
  quotes), not JSON. Each line is parsed with :func:`ast.literal_eval`, which only builds literals
  (strings, numbers, lists, dicts) and never runs code; a line that is strict JSON instead (``true``,
  ``null``) is read with :mod:`json`.

Every rating is kept (no rating cut-off; exact duplicate lines are dropped and counted); each user's
ratings are sorted by timestamp with a stable sort (same-second ratings keep their file order); users
are numbered by first appearance in the file, items by first appearance in the sorted sequences. Item
text is ``title``, ``categories`` (the category paths flattened, repeats left out) and ``brand``, each
cleaned as UniSRec cleans fields; items without a meta record get no text (they are kept). Texts are
read only for the items left after the interaction filter (:attr:`Imported.deferred_texts`).
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import re
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from recbench.data.formats import Imported, check_utf8, sequences_from_rows
from recbench.data.itemtext import nonempty_fields_text
from recbench.errors import DataError

TEXT_FIELDS = ("title", "categories", "brand")
TIE_ORDER = "same-timestamp ratings keep their order in the ratings file"
COLUMNS = ("user", "item", "rating", "timestamp")
_HEADER_FIELD = re.compile(r"[A-Za-z_][A-Za-z_ ]*")  # a column name where a timestamp would be
_ASIN_PREFIX = b"{'asin': '"  # how a 2014 meta line starts: its item can be read without parsing the line


def find_files(source: Path, full_name: str | None = None) -> tuple[Path, Path | None]:
    """``(ratings_<Category>.csv, meta_<Category>.json.gz or None)`` from a directory or the ratings file."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist")
    if source.is_file():
        ratings, directory = source, source.parent
    else:
        directory = source
        pattern = f"ratings_{full_name}.csv" if full_name else "ratings_*.csv"
        found = sorted(directory.glob(pattern))
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise DataError(f"{directory}: expected one {pattern} (Amazon 2014 ratings), found {len(found)}: {names}")
        ratings = found[0]
    category = ratings.name.removeprefix("ratings_").removesuffix(".csv")
    meta = directory / f"meta_{category}.json.gz"
    return ratings, meta if meta.is_file() else None


def _line_spans(raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and end (exclusive, newline left out) of every line, and which lines are blank."""
    codes = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(codes == ord("\n"))
    if not raw.endswith(b"\n"):
        ends = np.append(ends, len(raw))
    starts = np.concatenate([[0], ends[:-1] + 1])
    width = ends - starts
    blank = (width == 0) | ((width == 1) & (codes[np.minimum(starts, len(codes) - 1)] == ord("\r")))
    return starts, ends, blank


def read_ratings(path: Path) -> tuple[pd.DataFrame, np.ndarray, bool]:
    """The ratings as strings, the file line of every row, and whether a header line was skipped.

    Every non-blank line must have exactly 4 comma-separated fields (checked on the bytes, so the
    error names the line; the files use no quoting).
    """
    check_utf8(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty file (expected lines 'user,item,rating,timestamp')")
    starts, ends, blank = _line_spans(raw)
    commas = np.diff(np.searchsorted(np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == ord(",")), ends), prepend=0)
    bad = np.flatnonzero(~blank & (commas != 3))
    if len(bad):
        line = int(bad[0])
        text = raw[starts[line] : ends[line]].decode("utf-8")
        raise DataError(
            f"{path}:{line + 1}: expected 'user,item,rating,timestamp' (Amazon 2014 ratings; "
            f"--input-format table reads other tables), got {text[:80]!r}"
        )
    frame = pd.read_csv(
        path, header=None, names=list(COLUMNS), dtype=str, na_filter=False, quoting=csv.QUOTE_NONE, engine="c"
    )
    lines = np.flatnonzero(~blank) + 1
    header = bool(_HEADER_FIELD.fullmatch(frame["timestamp"].iloc[0].strip()))
    if header:
        frame, lines = frame.iloc[1:].reset_index(drop=True), lines[1:]
    return frame, lines, header


def _numbers(frame: pd.DataFrame, lines: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    rating = pd.to_numeric(frame["rating"], errors="coerce")
    time = pd.to_numeric(frame["timestamp"].str.strip(), errors="coerce")
    whole = time.notna() & (time == time.round())
    for column, good in (("rating", rating.notna().to_numpy()), ("timestamp", whole.to_numpy())):
        if not good.all():
            row = int(np.flatnonzero(~good)[0])
            raise DataError(f"{path}:{lines[row]}: {column} {frame[column].iloc[row]!r} is not a number")
    for column in ("user", "item"):
        empty = (frame[column].str.strip() == "").to_numpy()
        if empty.any():
            raise DataError(f"{path}:{lines[np.flatnonzero(empty)[0]]}: empty {column}")
    return rating.to_numpy(dtype=np.float64), time.to_numpy().astype(np.int64)


def _record(line: bytes, where: str) -> dict:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        record = ast.literal_eval(text)  # literals only: never evaluates code
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as literal_error:
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            reason = f"{type(literal_error).__name__}: {literal_error}"[:120]
            raise DataError(f"{where}: not a Python dict literal nor JSON ({reason})") from None
    if not isinstance(record, dict) or not isinstance(record.get("asin"), str):
        raise DataError(f"{where}: a meta record must be a dict with a string 'asin'")
    return record


def _flat_categories(value: object) -> list[str] | None:
    """``[['Beauty', 'Makeup'], ['Beauty', 'Nails']]`` -> ``['Beauty', 'Makeup', 'Nails']``."""
    if not isinstance(value, list):
        return None
    names: dict[str, None] = {}
    for path in value:
        for name in path if isinstance(path, list) else [path]:
            names.setdefault(str(name), None)
    return list(names) or None


def meta_texts(path: Path, wanted: Iterable[str]) -> dict[str, str]:
    """Item token -> text for the ``wanted`` items that have a record (the first one counts)."""
    wanted = set(wanted)
    texts: dict[str, str] = {}
    number = 0
    try:
        with gzip.open(path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                if line.startswith(_ASIN_PREFIX):  # the item is the first key: skip unwanted lines unparsed
                    end = line.find(b"'", len(_ASIN_PREFIX))
                    if end > 0 and line[len(_ASIN_PREFIX) : end].decode("utf-8", "replace") not in wanted:
                        continue
                if not line.strip():
                    continue
                record = _record(line, f"{path}:{number}")
                asin = record["asin"]
                if asin in wanted and asin not in texts:
                    fields = {**record, "categories": _flat_categories(record.get("categories"))}
                    texts[asin] = nonempty_fields_text(fields, TEXT_FIELDS)
    except (EOFError, OSError, zlib.error) as err:
        raise DataError(
            f"{path}: corrupt or truncated gzip after line {number:,} ({err or type(err).__name__}); "
            "delete it and download it again"
        ) from None
    return texts


def preprocess_amazon2014(ratings_path: Path, meta_path: Path | None) -> Imported:
    """Ratings -> chronological sequences; item texts from the meta file, read after the filter."""
    ratings_path = Path(ratings_path)
    if not ratings_path.is_file():
        raise DataError(f"missing file {ratings_path} (Amazon 2014 needs ratings_<Category>.csv)")
    frame, lines, header = read_ratings(ratings_path)
    if not len(frame):
        raise DataError(f"{ratings_path}: no ratings (only a header)")
    notes = [f"{ratings_path.name}:1 is a header line: skipped"] if header else []
    ratings, times = _numbers(frame, lines, ratings_path)
    duplicate = pd.DataFrame(
        {"u": frame["user"].to_numpy(), "i": frame["item"].to_numpy(), "r": ratings, "t": times}
    ).duplicated(keep="first")
    duplicate = duplicate.to_numpy()
    if duplicate.any():
        notes.append(
            f"dropped {int(duplicate.sum()):,} exact duplicate lines of {ratings_path.name} "
            f"(first: line {lines[np.flatnonzero(duplicate)[0]]})"
        )
    keep = ~duplicate
    user_ids, sequences, item_ids = sequences_from_rows(
        frame["user"].to_numpy(dtype=object)[keep], frame["item"].to_numpy(dtype=object)[keep], times[keep]
    )
    notes.append(
        f"{ratings_path.name}: {int(keep.sum()):,} ratings of {len(user_ids):,} users on {len(item_ids):,} items, "
        f"all kept (no rating cut-off); sorted by timestamp, {TIE_ORDER}"
    )
    files = [ratings_path]
    deferred = None
    if meta_path is not None:
        meta = Path(meta_path)
        files.append(meta)

        def texts_after_filter(tokens: list[str]) -> tuple[list[str], list[str]]:
            found = meta_texts(meta, tokens)
            missing = sum(1 for token in tokens if token not in found)
            note = f"item text from {meta.name}: {', '.join(TEXT_FIELDS)}, cleaned as UniSRec"
            if missing:
                note += f"; {missing:,} of {len(tokens):,} items have no record there (empty text, kept)"
            return [found.get(token, "") for token in tokens], [note]

        deferred = texts_after_filter
    else:
        notes.append(f"no meta_*.json.gz beside {ratings_path.name}: the dataset is ID-only")
    return Imported(
        user_ids,
        sequences,
        item_ids,
        None,
        "amazon2014",
        files,
        notes,
        details={
            "preprocess": {
                "pipeline": "recbench Amazon 2014 import",
                "text_fields": list(TEXT_FIELDS),
                "tie_order": TIE_ORDER,
            },
            "stats": {"ratings": int(keep.sum()), "duplicates_dropped": int(duplicate.sum())},
        },
        deferred_texts=deferred,
    )


def import_amazon2014(source: Path) -> Imported:
    """Amazon 2014 files in a local directory (or the ratings file, its meta file beside it)."""
    return preprocess_amazon2014(*find_files(source))
