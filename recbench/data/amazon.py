"""Raw Amazon Review Data 2018 -> canonical dataset, exactly as UniSRec's ``process_amazon.py``.

The steps (reference-results.md §4.3–4.4; UniSRec's code was read to settle each detail):

1. Ratings CSV without header, each line ``item,user,rating,time`` after stripping the line's
   surrounding whitespace. A line that does not split into 4 fields, whose rating is not a float
   or whose time is not an int is malformed: skipped as UniSRec does, but counted and reported
   with file:line.
2. Exact duplicates of ``(user, item, float(rating), int(time))`` are dropped (UniSRec keeps a set);
   the same user–item pair at another time or rating is kept. No rating cut-off.
3. Interactions whose item has no record in the meta file are dropped.
4. Iterative k-core (``user_k``/``item_k``, 5/5): counts over the current interactions, users and
   items below their threshold are removed together, repeated until nothing is removed.
5. Each user's interactions are sorted by time. **Tie order**: UniSRec leaves same-timestamp
   interactions in hash-randomised set order; recbench keeps them in the order of their first
   occurrence in the ratings file, so the result is deterministic. Users are numbered by their first
   kept line in the file, items by first appearance in the users' sorted sequences (UniSRec's
   numbering rule applied to this deterministic order).
6. Item text from the first meta record of each item: title, category, brand
   (:func:`recbench.data.itemtext.unisrec_text`).

Leave-one-out and the 50-item history cut happen downstream: the canonical Dataset stores full
sequences.

Memory: while filtering, user and item tokens are 64-bit hashes (pandas ``hash_array``), so the
~10M raw reviewer ids of Home never exist as Python strings. A second pass over the CSV recovers
the tokens of the kept users and items and checks that no two distinct tokens share a kept hash;
such a collision (the only kind that could change the result) is reported, never used silently.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recbench.data.fetch import byte_progress
from recbench.data.formats import BLOCK_BYTES, Imported, decode_block, iter_line_blocks
from recbench.data.itemtext import AMAZON_TEXT_FIELDS, MAX_TEXT_CHARS, unisrec_text
from recbench.errors import DataError

TIE_ORDER = "same-timestamp interactions keep the order of their first occurrence in the ratings file"
_SPACE_BYTES = np.array([9, 10, 11, 12, 13, 28, 29, 30, 31, 32], dtype=np.uint8)  # ASCII chars str.strip() removes
_INT64 = np.iinfo(np.int64)
_META_BATCH = 4096
MAX_EXAMPLES = 10


@dataclass(frozen=True)
class AmazonParams:
    """Preprocessing parameters (``[families.amazon2018.preprocess]`` in datasets.toml)."""

    user_k: int = 5
    item_k: int = 5
    text_fields: tuple[str, ...] = AMAZON_TEXT_FIELDS
    max_text_chars: int = MAX_TEXT_CHARS

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> AmazonParams:
        known = {k: values[k] for k in ("user_k", "item_k", "max_text_chars") if k in values}
        fields = tuple(values["text_fields"]) if "text_fields" in values else AMAZON_TEXT_FIELDS  # type: ignore[arg-type]
        return cls(text_fields=fields, **known)  # type: ignore[arg-type]


# --- ratings CSV ---------------------------------------------------------------------------------
@dataclass
class _Block:
    items: np.ndarray  # object (str)
    users: np.ndarray  # object (str)
    rating: np.ndarray  # float64
    time: np.ndarray  # int64
    lines: int
    malformed: list[tuple[int, str]] = field(default_factory=list)


def parse_ratings_block(raw: bytes, path: Path, first_line: int, fast: bool = True) -> _Block:
    """The interactions of a block of whole lines, as UniSRec's ``load_ratings`` reads them."""
    text = decode_block(raw, path, first_line)
    block = _parse_fast(raw, text) if fast else None
    return block if block is not None else _parse_exact(text, path, first_line)


def _parse_fast(raw: bytes, text: str) -> _Block | None:
    """Vectorised parse, used only where it provably equals ``line.strip().split(',')``; else None.

    With no NUL, no lone CR, no line starting with whitespace or a non-ASCII byte, and exactly 3
    commas on every line, splitting the whole block on commas and newlines yields each line's 4
    fields; trailing whitespace (or a CR) can only end the time field, which ``int()`` ignores
    exactly as after ``strip()``.
    """
    if "\x00" in text or text.count("\r") != text.count("\r\n"):
        return None
    codes = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(codes == ord("\n"))
    if not raw.endswith(b"\n"):
        ends = np.append(ends, len(raw))
    first_bytes = codes[np.concatenate([[0], ends[:-1] + 1])]
    if np.isin(first_bytes, _SPACE_BYTES).any() or (first_bytes >= 0x80).any():
        return None  # a line may start with whitespace (non-ASCII, a BOM included, goes to the exact parser)
    commas_per_line = np.diff(np.searchsorted(np.flatnonzero(codes == ord(",")), ends), prepend=0)
    if len(ends) == 0 or (commas_per_line != 3).any():
        return None
    fields = (text[:-1] if text.endswith("\n") else text).replace("\n", ",").split(",")
    try:  # object -> number goes through Python's float() and int(): UniSRec's exact rules
        rating = np.array(fields[2::4], dtype=object).astype(np.float64)
        time = np.array(fields[3::4], dtype=object).astype(np.int64)
    except (ValueError, OverflowError):
        return None
    return _Block(np.array(fields[0::4], dtype=object), np.array(fields[1::4], dtype=object), rating, time, len(ends))


def _parse_exact(text: str, path: Path, first_line: int) -> _Block:
    """UniSRec's loop, line by line (universal newlines, as Python's text-mode file iteration)."""
    items, users, ratings, times, malformed = [], [], [], [], []
    lines = 0
    for lines, line in enumerate(io.StringIO(text, newline=None), start=1):
        parts = line.strip().split(",")
        try:
            if len(parts) != 4:
                raise ValueError
            rating, time = float(parts[2]), int(parts[3])
        except ValueError:
            malformed.append((first_line + lines - 1, line.rstrip("\n")))
            continue
        if not _INT64.min <= time <= _INT64.max:
            raise DataError(f"{path}:{first_line + lines - 1}: timestamp {time} does not fit in 64 bits")
        items.append(parts[0])
        users.append(parts[1])
        ratings.append(rating)
        times.append(time)
    as_object = lambda values: np.array(values, dtype=object) if values else np.empty(0, dtype=object)  # noqa: E731
    return _Block(
        as_object(items),
        as_object(users),
        np.array(ratings, dtype=np.float64),
        np.array(times, dtype=np.int64),
        lines,
        malformed,
    )


def _blocks(path: Path, block_bytes: int, fast: bool, show_progress: bool, label: str) -> Iterator[_Block]:
    line = 1
    with byte_progress(label, path.stat().st_size, show_progress) as advance:
        for raw in iter_line_blocks(path, block_bytes):
            block = parse_ratings_block(raw, path, line, fast)
            line += block.lines
            advance(len(raw))
            yield block


def token_hash(tokens: np.ndarray) -> np.ndarray:
    """64-bit hashes of string tokens (deterministic across runs and machines)."""
    if len(tokens) == 0:
        return np.empty(0, dtype=np.uint64)
    return pd.util.hash_array(tokens, categorize=False)  # categorize=True is slower on ids


@dataclass
class Ratings:
    """Every well-formed line of a ratings CSV, in file order, tokens as hashes."""

    item_hash: np.ndarray  # uint64
    user_hash: np.ndarray  # uint64
    rating: np.ndarray  # float64
    time: np.ndarray  # int64
    lines: int
    malformed: int
    malformed_examples: list[tuple[int, str]]


def read_ratings(path: Path, block_bytes: int = BLOCK_BYTES, fast: bool = True, show_progress: bool = False) -> Ratings:
    """Pass 1 over the ratings CSV."""
    columns: dict[str, list[np.ndarray]] = {"item": [], "user": [], "rating": [], "time": []}
    lines = malformed = 0
    examples: list[tuple[int, str]] = []
    for block in _blocks(path, block_bytes, fast, show_progress, f"reading {path.name}"):
        columns["item"].append(token_hash(block.items))
        columns["user"].append(token_hash(block.users))
        columns["rating"].append(block.rating)
        columns["time"].append(block.time)
        lines += block.lines
        malformed += len(block.malformed)
        examples += block.malformed[: MAX_EXAMPLES - len(examples)]
    joined = {}
    for key, dtype in (("item", np.uint64), ("user", np.uint64), ("rating", np.float64), ("time", np.int64)):
        parts = columns.pop(key)  # one column at a time: the peak holds one extra column, not all
        joined[key] = np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)
        del parts
    return Ratings(joined["item"], joined["user"], joined["rating"], joined["time"], lines, malformed, examples)


def first_occurrences(ratings: Ratings) -> np.ndarray:
    """Indices of the lines that are not an exact duplicate of an earlier one (UniSRec's set).

    A 64-bit hash of each row finds the candidates (rows whose hash repeats) with one sort (no
    hash table over all rows: memory); only they are compared field by field, so a hash collision
    never drops a line.
    """
    rating = ratings.rating
    rating += 0.0  # in place: -0.0 == 0.0 in a Python set
    with np.errstate(over="ignore"):  # multiplication modulo 2**64 is the point
        row = ratings.user_hash ^ (ratings.item_hash * np.uint64(0x9E3779B97F4A7C15))
        row ^= rating.view(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        row ^= ratings.time.view(np.uint64) * np.uint64(0x165667B19E3779F9)
    ordered = np.sort(row)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    candidates = np.flatnonzero(_isin_sorted(row, repeated))
    del row
    subset = pd.DataFrame(
        {
            "u": ratings.user_hash[candidates],
            "i": ratings.item_hash[candidates],
            "r": rating[candidates],
            "t": ratings.time[candidates],
        }
    )
    # float('nan') != float('nan'): UniSRec's set keeps every NaN-rated line
    duplicate = subset.duplicated(keep="first").to_numpy() & ~np.isnan(subset["r"].to_numpy())
    keep = np.ones(len(rating), dtype=bool)
    keep[candidates[duplicate]] = False
    return np.flatnonzero(keep)


# --- meta file -----------------------------------------------------------------------------------
def _isin_sorted(values: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    if len(sorted_unique) == 0:
        return np.zeros(len(values), dtype=bool)
    index = np.minimum(np.searchsorted(sorted_unique, values), len(sorted_unique) - 1)
    return sorted_unique[index] == values


def read_meta(
    path: Path, wanted: np.ndarray, params: AmazonParams, show_progress: bool = False
) -> tuple[np.ndarray, dict[str, str]]:
    """Sorted hashes of every asin in the meta file, and the text of the first record of each
    asin whose hash is in ``wanted`` (sorted). A broken line or gzip stream is a DataError."""
    hashes: list[np.ndarray] = []
    texts: dict[str, str] = {}
    batch: list[bytes] = []
    number = 0

    def flush(first: int) -> None:
        records, asins = [], []
        for offset, line in enumerate(batch):
            where = f"{path}:{first + offset}"
            try:
                record = json.loads(line)
            except UnicodeDecodeError as err:
                raise DataError(f"{where}: not valid UTF-8 ({err.reason})") from None
            except json.JSONDecodeError as err:
                raise DataError(f"{where}: malformed JSON ({err.msg}, column {err.colno})") from None
            if not isinstance(record, dict) or not isinstance(record.get("asin"), str):
                raise DataError(f"{where}: a meta record must be a JSON object with a string 'asin'")
            records.append(record)
            asins.append(record["asin"])
        batch_hashes = token_hash(np.array(asins, dtype=object))
        hashes.append(batch_hashes)
        for k in np.flatnonzero(_isin_sorted(batch_hashes, wanted)):
            if asins[k] not in texts:  # only the first record of an asin counts
                texts[asins[k]] = unisrec_text(records[k], params.text_fields, params.max_text_chars)
        batch.clear()

    with open(path, "rb") as raw, byte_progress(f"reading {path.name}", path.stat().st_size, show_progress) as advance:
        try:
            with gzip.GzipFile(fileobj=raw) as lines:
                position = 0
                for number, line in enumerate(lines, start=1):
                    batch.append(line)
                    if len(batch) == _META_BATCH:
                        flush(number - len(batch) + 1)
                        advance(raw.tell() - position)
                        position = raw.tell()
                flush(number - len(batch) + 1)
        except (EOFError, OSError, zlib.error) as err:
            raise DataError(
                f"{path}: corrupt or truncated gzip after line {number:,} ({err or type(err).__name__}); "
                "delete it and download it again"
            ) from None
    return np.unique(np.concatenate(hashes)) if hashes else np.empty(0, dtype=np.uint64), texts


# --- filtering, tokens, order --------------------------------------------------------------------
def k_core(users: np.ndarray, items: np.ndarray, user_k: int, item_k: int) -> tuple[np.ndarray, int]:
    """Indices of the interactions in the iterative (user_k, item_k)-core and the number of rounds
    that removed something. ``users``/``items`` are dense codes; duplicates count."""
    index = np.arange(len(users))
    rounds = 0
    n_users, n_items = (int(users.max()) + 1, int(items.max()) + 1) if len(users) else (0, 0)
    while True:
        user_count = np.bincount(users, minlength=n_users)
        item_count = np.bincount(items, minlength=n_items)
        keep = (user_count[users] >= user_k) & (item_count[items] >= item_k)
        if keep.all():
            return index, rounds
        index, users, items = index[keep], users[keep], items[keep]
        rounds += 1


def _recover_tokens(
    path: Path, user_rows: np.ndarray, item_rows: np.ndarray, block_bytes: int, fast: bool, show_progress: bool
) -> tuple[dict[int, str], dict[int, str]]:
    """Pass 2: the tokens of the rows (well-formed lines) whose pass-1 user / item hash was kept.

    Two distinct tokens with one hash among them is the only collision that can change the result:
    it is an error.
    """
    users: dict[int, str] = {}
    items: dict[int, str] = {}
    row = 0
    for block in _blocks(path, block_bytes, fast, show_progress, f"tokens of {path.name}"):
        rows = slice(row, row + len(block.items))
        row = rows.stop
        for tokens, wanted, found, kind in (
            (block.users, user_rows, users, "user"),
            (block.items, item_rows, items, "item"),
        ):
            hit = wanted[rows]
            if not hit.any():
                continue
            distinct = pd.unique(tokens[hit])
            for token, value in zip(distinct, token_hash(distinct)):
                if found.setdefault(int(value), token) != token:
                    raise DataError(
                        f"{path}: {kind} tokens {found[int(value)]!r} and {token!r} share a 64-bit hash; "
                        "recbench cannot preprocess this file exactly (please report it)"
                    )
    if row != len(user_rows):
        raise DataError(
            f"{path} changed while it was being read ({row:,} lines now, {len(user_rows):,} before); run download again"
        )
    return users, items


@dataclass
class AmazonStats:
    """What each step kept (recorded in the dataset manifest)."""

    lines: int = 0
    malformed_lines: int = 0
    interactions: int = 0
    duplicates_dropped: int = 0
    without_meta_dropped: int = 0
    k_core_rounds: int = 0
    k_core_dropped: int = 0


def preprocess_amazon(
    ratings_path: Path,
    meta_path: Path,
    params: AmazonParams = AmazonParams(),
    name: str = "amazon",
    block_bytes: int = BLOCK_BYTES,
    fast: bool = True,
    show_progress: bool = False,
) -> Imported:
    """Run UniSRec's pipeline on a ratings CSV and its meta file (see the module docstring)."""
    ratings_path, meta_path = Path(ratings_path), Path(meta_path)
    for path in (ratings_path, meta_path):
        if not path.is_file():
            raise DataError(f"missing file {path} (raw Amazon 2018 needs the ratings-only CSV and meta_*.json.gz)")
    ratings = read_ratings(ratings_path, block_bytes, fast, show_progress)
    stats = AmazonStats(lines=ratings.lines, malformed_lines=ratings.malformed)
    examples = ratings.malformed_examples
    kept = first_occurrences(ratings)
    stats.duplicates_dropped = len(ratings.time) - len(kept)
    user_hash, item_hash, time = ratings.user_hash[kept], ratings.item_hash[kept], ratings.time[kept]
    ratings.rating = ratings.time = np.empty(0)  # free them; the hashes of every row serve pass 2
    del kept

    # Items that can survive the k-core (it only removes) are the only ones whose text is kept.
    distinct_items, counts = np.unique(item_hash, return_counts=True)
    meta_hashes, texts = read_meta(meta_path, distinct_items[counts >= params.item_k], params, show_progress)
    has_meta = _isin_sorted(item_hash, meta_hashes)
    stats.without_meta_dropped = int((~has_meta).sum())
    if len(item_hash) and not has_meta.any():
        raise DataError(
            f"{name}: no item of {ratings_path.name} has a record in {meta_path.name}; "
            "are they files of the same category?"
        )
    user_hash, item_hash, time = user_hash[has_meta], item_hash[has_meta], time[has_meta]

    core, stats.k_core_rounds = k_core(
        pd.factorize(user_hash)[0], pd.factorize(item_hash)[0], params.user_k, params.item_k
    )
    stats.k_core_dropped = len(user_hash) - len(core)
    stats.interactions = len(core)
    if not len(core):
        raise DataError(
            f"{name}: empty after filtering: {stats.lines:,} lines gave {len(user_hash):,} interactions with metadata, "
            f"and their {params.user_k}/{params.item_k}-core is empty"
        )
    user_hash, item_hash, time = user_hash[core], item_hash[core], time[core]

    user_codes, user_order = pd.factorize(user_hash)  # users by first kept line
    order = np.lexsort((time, user_codes))  # stable: ties stay in file order
    item_codes, item_order = pd.factorize(item_hash[order])  # items by first appearance in sequences
    user_rows = _isin_sorted(ratings.user_hash, np.sort(user_order))
    item_rows = _isin_sorted(ratings.item_hash, np.sort(item_order))
    del ratings
    user_tokens, item_tokens = _recover_tokens(ratings_path, user_rows, item_rows, block_bytes, fast, show_progress)
    item_ids = [item_tokens[int(h)] for h in item_order]
    missing = [token for token in item_ids if token not in texts]
    if missing:  # every kept item has meta, so only a hash collision gets here
        raise DataError(f"{meta_path}: no text for kept item {missing[0]!r} (hash collision?); please report it")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(user_codes, minlength=len(user_order)))])
    return Imported(
        user_ids=[user_tokens[int(h)] for h in user_order],
        sequences=np.split(item_codes.astype(np.int64), offsets[1:-1]),
        item_ids=item_ids,
        item_texts=[texts[token] for token in item_ids],
        format="amazon",
        files=[ratings_path, meta_path],
        notes=_notes(ratings_path, meta_path, stats, params, examples),
        details={
            "preprocess": {"pipeline": "UniSRec process_amazon.py", **params_record(params), "tie_order": TIE_ORDER},
            "stats": dict(stats.__dict__),
        },
    )


def params_record(params: AmazonParams) -> dict[str, object]:
    return {
        "user_k": params.user_k,
        "item_k": params.item_k,
        "text_fields": list(params.text_fields),
        "max_text_chars": params.max_text_chars,
    }


def _notes(
    ratings_path: Path, meta_path: Path, stats: AmazonStats, params: AmazonParams, examples: list[tuple[int, str]]
) -> list[str]:
    notes = []
    if stats.malformed_lines:
        shown = "; ".join(f"{ratings_path.name}:{line}: {text[:60]!r}" for line, text in examples)
        notes.append(
            f"WARNING: {stats.malformed_lines:,} malformed lines of {ratings_path.name} skipped (as UniSRec does); "
            f"first: {shown}"
        )
    notes += [
        (
            f"{ratings_path.name}: {stats.lines:,} lines; "
            f"{stats.duplicates_dropped:,} exact duplicate interactions dropped (no rating cut-off)"
        ),
        f"{stats.without_meta_dropped:,} interactions of items without a record in {meta_path.name} dropped",
        (
            f"{params.user_k}/{params.item_k}-core: "
            f"{stats.k_core_rounds} rounds dropped {stats.k_core_dropped:,} interactions"
        ),
        f"tie order: {TIE_ORDER}",
    ]
    return notes


def find_raw_files(directory: Path, full_name: str | None = None) -> tuple[Path, Path]:
    """``(ratings CSV, meta file)`` in ``directory`` (flat, or UniSRec's ``Ratings/`` + ``Metadata/``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    if full_name is None:
        metas = sorted(directory.glob("meta_*.json.gz")) + sorted(directory.glob("Metadata/meta_*.json.gz"))
        if len(metas) != 1:
            raise DataError(
                f"{directory}: expected one meta_<Category>.json.gz, "
                f"found {len(metas)}: {', '.join(p.name for p in metas) or 'none'}"
            )
        full_name = metas[0].name[len("meta_") : -len(".json.gz")]
    found = []
    for name, sub in ((f"{full_name}.csv", "Ratings"), (f"meta_{full_name}.json.gz", "Metadata")):
        options = [directory / name, directory / sub / name]
        path = next((p for p in options if p.is_file()), None)
        if path is None:
            raise DataError(
                f"missing file {options[0]} (raw Amazon 2018 needs {full_name}.csv and meta_{full_name}.json.gz)"
            )
        found.append(path)
    return found[0], found[1]


def import_amazon(
    directory: Path,
    full_name: str | None = None,
    params: AmazonParams = AmazonParams(),
    name: str = "amazon",
    show_progress: bool = False,
) -> Imported:
    """Preprocess raw Amazon 2018 files found in a local directory."""
    ratings_path, meta_path = find_raw_files(directory, full_name)
    return preprocess_amazon(ratings_path, meta_path, params, name, show_progress=show_progress)
