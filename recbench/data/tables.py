"""Importers for tabular interaction files: RecBole atomic files and plain interaction tables.

Both end the same way (:func:`sequences_from_rows`): exact duplicate lines are dropped and counted;
each user's interactions are sorted by timestamp with a stable sort, so same-timestamp
interactions keep their file order; users are numbered by first appearance in the file, items by
first appearance in the sorted sequences. Nothing else is filtered here (no rating cut-off, no
k-core); :func:`recbench.data.dataset.build_dataset` then drops users with fewer than 3 interactions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from recbench.data.formats import (
    TABLE_SUFFIXES,
    Imported,
    ImportOptions,
    check_utf8,
    ends_without_newline,
    sequences_from_rows,
)
from recbench.data.itemtext import nonempty_fields_text
from recbench.errors import DataError

USER_COLUMNS = ("user_id", "user", "userid", "reviewerid", "uid", "visitorid", "customer_id")
ITEM_COLUMNS = ("item_id", "item", "itemid", "asin", "iid", "movieid", "product_id", "parent_asin")
TIME_COLUMNS = ("timestamp", "time", "unixreviewtime", "ts", "datetime", "date")


def read_delimited(path: Path, sep: str, quoting: int = csv.QUOTE_NONE) -> tuple[pd.DataFrame, np.ndarray]:
    """A delimited text file with a header, all values as strings, and the file line of every row.

    Blank lines are skipped; any other line whose field count differs from the header's is an
    error naming file and line (checked on the raw bytes when the file has no quotes).
    """
    check_utf8(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty file (expected a header line and rows)")
    exact_lines = quoting == csv.QUOTE_NONE or b'"' not in raw
    if exact_lines:
        codes = np.frombuffer(raw, dtype=np.uint8)
        ends = np.flatnonzero(codes == ord("\n"))
        if not raw.endswith(b"\n"):
            ends = np.append(ends, len(raw))
        starts = np.concatenate([[0], ends[:-1] + 1])
        blank = (ends - starts == 0) | ((ends - starts == 1) & (codes[np.minimum(starts, len(codes) - 1)] == ord("\r")))
        per_line = np.diff(np.searchsorted(np.flatnonzero(codes == ord(sep)), ends), prepend=0)
        header = int(np.flatnonzero(~blank)[0])
        bad = np.flatnonzero(~blank & (per_line != per_line[header]))
        if len(bad):
            line = int(bad[0])
            raise DataError(
                f"{path}:{line + 1}: expected {per_line[header] + 1} fields separated by {sep!r} (as in the header), "
                f"found {per_line[line] + 1}"
            )
        rows = np.flatnonzero(~blank)[1:] + 1
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0,
            dtype=object,
            na_filter=False,
            quoting=quoting,
            index_col=False,
            engine="c",
            skip_blank_lines=True,
        )
    except pd.errors.ParserError as err:
        raise DataError(f"{path}: {err}") from None
    return frame, rows if exact_lines else np.arange(len(frame)) + 2


def read_any_table(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """CSV, TSV, parquet or JSON lines by suffix (other suffixes: tab if the header has one, else comma)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {path}")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except ImportError:
            raise DataError(
                f"{path}: reading parquet needs pyarrow (pip install 'recbench[parquet]'), or convert the table to CSV"
            ) from None
        return frame, np.arange(len(frame)) + 1
    if suffix in (".jsonl", ".json"):
        check_utf8(path)
        try:
            frame = pd.read_json(path, lines=True, dtype=False)
        except ValueError as err:
            raise DataError(f"{path}: not JSON lines ({err})") from None
        return frame, np.arange(len(frame)) + 1
    if suffix in (".tsv", ".tab"):
        return read_delimited(path, "\t")
    if suffix == ".csv":
        return read_delimited(path, ",", csv.QUOTE_MINIMAL)
    with open(path, "rb") as f:  # any other suffix: tab-separated if the header has a tab
        first = f.readline()
    return (
        read_delimited(path, "\t", csv.QUOTE_NONE) if b"\t" in first else read_delimited(path, ",", csv.QUOTE_MINIMAL)
    )


def pick_column(
    frame: pd.DataFrame,
    path: Path,
    given: str | None,
    candidates: tuple[str, ...],
    what: str,
    flag: str,
    required: bool = True,
) -> str | None:
    """The column named ``given``, else the first known name for ``what`` (case-insensitive)."""
    if given is not None:
        if given not in frame.columns:
            raise DataError(f"{path}: no column '{given}' ({flag}); columns are: {', '.join(map(str, frame.columns))}")
        return given
    lower = {str(c).lower(): c for c in frame.columns}
    for name in candidates:
        if name in lower:
            return lower[name]
    if required:
        raise DataError(f"{path}: no {what} column among {', '.join(map(str, frame.columns))}; name it with {flag}")
    return None


def tokens(frame: pd.DataFrame, column: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """A column as non-empty string tokens (numbers in parquet become their decimal text)."""
    values = frame[column]
    bad = values.isna().to_numpy() | (values.astype(str).str.len() == 0).to_numpy()
    if bad.any():
        raise DataError(f"{path}:{lines[np.flatnonzero(bad)[0]]}: empty value in column '{column}'")
    return values.astype(str).to_numpy(dtype=object)


def timestamps(frame: pd.DataFrame, column: str, path: Path, lines: np.ndarray) -> np.ndarray:
    """Numbers as they are; otherwise dates/times parsed to nanoseconds. A bad value names its line."""
    values = frame[column]
    numbers = pd.to_numeric(values, errors="coerce")
    if not numbers.isna().any():
        return numbers.to_numpy()
    if numbers.notna().any():  # mixed numbers and text: name the first value that is not a number
        first = int(np.flatnonzero(numbers.isna().to_numpy())[0])
        raise DataError(f"{path}:{lines[first]}: timestamp {values.iloc[first]!r} in column '{column}' is not a number")
    dates = pd.to_datetime(values, errors="coerce", format="mixed")
    if dates.isna().any():
        first = int(np.flatnonzero(dates.isna().to_numpy())[0])
        raise DataError(
            f"{path}:{lines[first]}: timestamp {values.iloc[first]!r} in column '{column}' "
            "is neither a number nor a date"
        )
    return dates.astype("int64").to_numpy()


def check_last_line(frame: pd.DataFrame, path: Path, lines: np.ndarray, used: dict[str, str | None]) -> str | None:
    """A last line without its newline may have been cut mid-value: refuse it if it looks cut, else a note.

    Only the line's last field can be cut short (missing fields fail the field count). It looks cut
    when that field is one recbench uses (``used``: role -> column) and its value is shorter than every
    other value of the column, as a cut timestamp or fixed-width token is.
    """
    if path.suffix.lower() in (".parquet", ".pq", ".json", ".jsonl") or not ends_without_newline(path):
        return None
    last = str(frame.columns[-1])
    for role, column in used.items():
        if column is None or str(column) != last or len(frame) < 2:
            continue
        value = str(frame[column].iloc[-1])
        shortest = int(frame[column].iloc[:-1].astype(str).str.len().min())
        if len(value) < shortest:
            raise DataError(
                f"{path}:{lines[-1]}: the last line has no newline and its {role} {value!r} (column '{column}') is "
                f"shorter than every other ({shortest}+ characters): the file looks cut; complete or remove that line"
            )
    return f"the last line of {path.name} (line {lines[-1]}) has no newline at its end; its values look whole: kept"


def _interactions(
    frame: pd.DataFrame, path: Path, lines: np.ndarray, user: str, item: str, time: str | None, fmt: str
) -> Imported:
    """Drop exact duplicate lines, sort by time, build the sequences."""
    notes = []
    if len(frame) and (note := check_last_line(frame, path, lines, {"timestamp": time, "item": item, "user": user})):
        notes.append(note)
    duplicate = frame.duplicated(keep="first").to_numpy()
    if duplicate.any():
        notes.append(
            f"dropped {int(duplicate.sum()):,} exact duplicate lines of {path.name} "
            f"(first: line {lines[np.flatnonzero(duplicate)[0]]})"
        )
        frame, lines = frame[~duplicate], lines[~duplicate]
    if not len(frame):
        raise DataError(f"{path}: no interactions (only a header)")
    times = timestamps(frame, time, path, lines) if time is not None else None
    if time is None:
        notes.append(f"{path.name} has no timestamp column: its line order is taken as the chronological order")
    else:
        notes.append(
            f"sorted by '{time}'; same-timestamp interactions keep their file order; "
            f"all {len(frame):,} interactions kept (no rating cut-off)"
        )
    user_ids, sequences, item_ids = sequences_from_rows(
        tokens(frame, user, path, lines), tokens(frame, item, path, lines), times
    )
    return Imported(user_ids, sequences, item_ids, None, fmt, [path], notes)


def attach_texts(
    imported: Imported,
    table: pd.DataFrame,
    path: Path,
    lines: np.ndarray,
    item_column: str,
    fields: tuple[str, ...] | None,
) -> None:
    """Item texts from ``table`` (first row per item): one ``text`` column as is, or fields cleaned as UniSRec."""
    if fields is None:
        fields = ("text",) if "text" in table.columns else tuple(str(c) for c in table.columns if c != item_column)
    missing = [f for f in fields if f not in table.columns]
    if missing or not fields:
        raise DataError(
            f"{path}: no text column {', '.join(missing) or '(none left besides the item)'}; "
            f"columns are: {', '.join(map(str, table.columns))} (choose with --text-fields)"
        )
    cut_note = None
    if len(table) and path.suffix.lower() not in (".parquet", ".pq") and ends_without_newline(path):
        last = str(table[item_column].iloc[-1])
        cut_note = f"the last line of {path.name} has no newline at its end: if the file was cut, "
        cut_note += f"so is the text of item {last!r}"
    repeated = table.duplicated(subset=[item_column], keep="first").to_numpy()
    duplicates_note = None
    if repeated.any():
        row = int(np.flatnonzero(repeated)[0])
        duplicates_note = (
            f"{path.name} repeats items (extra rows: {int(repeated.sum()):,}, first: line {lines[row]}, "
            f"item {str(table[item_column].iloc[row])!r}); the first row of each item was used"
        )
    table, lines = table[~repeated], lines[~repeated]
    keys = tokens(table, item_column, path, lines)
    records = table[list(fields)].to_dict("records")
    if fields == ("text",):
        by_item = {k: "" if pd.isna(r["text"]) else str(r["text"]) for k, r in zip(keys, records)}
    else:
        by_item = {
            k: nonempty_fields_text({f: (None if _missing(v) else v) for f, v in r.items()}, fields)
            for k, r in zip(keys, records)
        }
    texts = [by_item.get(token, "") for token in imported.item_ids]
    matched = sum(1 for token in imported.item_ids if token in by_item)
    if matched == 0:
        raise DataError(
            f"{path}: its {len(by_item):,} items (column '{item_column}') "
            f"match none of the {len(imported.item_ids):,} interacted items"
        )
    imported.item_texts = texts
    imported.files.append(path)
    how = "as is" if fields == ("text",) else f"fields {', '.join(fields)} cleaned as UniSRec"
    imported.notes.append(f"item text from {path.name} ({how}) for {matched:,} of {len(imported.item_ids):,} items")
    if duplicates_note:
        imported.notes.append(duplicates_note)
    if cut_note:
        imported.notes.append(cut_note)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


# --- RecBole atomic files ------------------------------------------------------------------------
def read_atomic(path: Path) -> tuple[pd.DataFrame, np.ndarray, dict[str, str]]:
    """A RecBole atomic file (tab-separated, header ``name:type``): columns renamed to bare names."""
    frame, lines = read_delimited(path, "\t")
    types = {}
    for column in frame.columns:
        name, sep, kind = str(column).partition(":")
        if not sep:
            raise DataError(
                f"{path}:1: header field {column!r} is not 'name:type' (RecBole atomic files need typed headers)"
            )
        types[name] = kind
    frame.columns = list(types)
    return frame, lines, types


def import_recbole(source: Path, options: ImportOptions) -> Imported:
    """RecBole's ``X.inter`` (user, item, optional timestamp) and optional ``X.item`` text fields."""
    source = Path(source)
    if source.is_file():
        inter_path = source
    else:
        found = sorted(p for p in source.glob("*.inter") if p.name.count(".") == 1)
        if len(found) != 1:
            raise DataError(
                f"{source}: expected exactly one 'X.inter' file, "
                f"found {len(found)}: {', '.join(p.name for p in found) or 'none'}"
            )
        inter_path = found[0]
    frame, lines, _ = read_atomic(inter_path)
    user = pick_column(frame, inter_path, options.user_col, ("user_id",), "user", "--user-col")
    item = pick_column(frame, inter_path, options.item_col, ("item_id",), "item", "--item-col")
    time = pick_column(frame, inter_path, options.time_col, ("timestamp",), "timestamp", "--time-col", required=False)
    imported = _interactions(frame, inter_path, lines, user, item, time, "recbole")  # type: ignore[arg-type]
    item_path = inter_path.with_suffix(".item")
    if item_path.is_file():
        table, item_lines, types = read_atomic(item_path)
        key = pick_column(table, item_path, options.item_col, ("item_id",), "item", "--item-col")
        fields = options.text_fields or tuple(c for c, kind in types.items() if kind == "token_seq" and c != key)
        if not fields:
            imported.notes.append(
                f"{item_path.name} has no token_seq (text) column: "
                "the dataset is ID-only (choose fields with --text-fields)"
            )
        else:
            attach_texts(imported, table, item_path, item_lines, key, tuple(fields))  # type: ignore[arg-type]
    else:
        imported.notes.append(f"no {item_path.name}: the dataset is ID-only (text-based methods cannot use it)")
    return imported


# --- plain interaction tables --------------------------------------------------------------------
def import_table(source: Path, options: ImportOptions) -> Imported:
    """A CSV/TSV/parquet interactions table with user, item and timestamp columns (+ item-text table)."""
    source = Path(source)
    if source.is_dir():
        found = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
        if len(found) != 1:
            raise DataError(
                f"{source}: expected one interactions table ({', '.join(TABLE_SUFFIXES)}), "
                f"found {len(found)}; pass the file itself"
            )
        source = found[0]
    frame, lines = read_any_table(source)
    user = pick_column(frame, source, options.user_col, USER_COLUMNS, "user", "--user-col")
    item = pick_column(frame, source, options.item_col, ITEM_COLUMNS, "item", "--item-col")
    time = pick_column(frame, source, options.time_col, TIME_COLUMNS, "timestamp", "--time-col")
    imported = _interactions(frame, source, lines, user, item, time, "table")  # type: ignore[arg-type]
    if options.item_text is not None:
        table, text_lines = read_any_table(options.item_text)
        key = pick_column(
            table, Path(options.item_text), item if item in table.columns else None, ITEM_COLUMNS, "item", "--item-col"
        )
        attach_texts(imported, table, Path(options.item_text), text_lines, key, options.text_fields)  # type: ignore[arg-type]
    else:
        imported.notes.append("no --item-text table: the dataset is ID-only (text-based methods cannot use it)")
    return imported
