"""Importers: bring files in other tools' formats into the canonical Dataset.

Each importer returns an :class:`Imported` for :func:`recbench.data.dataset.build_dataset`, which applies
the canonical checks. Formats (``IMPORTERS``; :func:`detect_format` guesses one from the files):

- ``unisrec``: UniSRec / RecBole benchmark files ``X.train/valid/test.inter`` + ``X.item2index``
  + ``X.user2index`` (+ ``X.text``), as released with UniSRec and VQ-Rec.
- ``lcrec``: LC-Rec style ``X.inter.json`` (user index -> chronological item indices) +
  ``X.item2id`` (+ ``X.user2id``, + ``X.item.json`` with title / categories / brand), as
  released with LC-Rec, LETTER and MQL4GRec. Item text is built as UniSRec builds it. A
  ``X.item.partial.json`` (text for some items only) is used only when asked for.
- ``recbole``: RecBole atomic ``X.inter`` (+ ``X.item``) (:mod:`recbench.data.tables`).
- ``table``: a plain CSV/TSV/parquet interactions table (+ item-text table) (:mod:`recbench.data.tables`).
- ``amazon``: raw Amazon 2018 ratings CSV + ``meta_*.json.gz``, preprocessed exactly as UniSRec
  (:mod:`recbench.data.amazon`).
- ``amazon2014``: Amazon 2014 ``ratings_<Category>.csv`` (+ ``meta_<Category>.json.gz`` of Python
  dict literals) (:mod:`recbench.data.amazon2014`).
- ``movielens``: GroupLens ``ml-1m.zip`` or its extracted ``ratings.dat`` (+ ``movies.dat``)
  (:mod:`recbench.data.movielens`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recbench.data.amazon2014 import import_amazon2014
from recbench.data.formats import TABLE_SUFFIXES, Imported, ImportOptions, read_lines
from recbench.data.itemtext import MAX_TEXT_CHARS, clean_text, nonempty_fields_text
from recbench.data.movielens import RATINGS_FILE, import_movielens
from recbench.data.tables import import_recbole, import_table
from recbench.errors import DataError, UnknownNameError

__all__ = [
    "Imported",
    "ImportOptions",
    "IMPORTERS",
    "clean_text",
    "detect_format",
    "import_lcrec",
    "import_unisrec",
    "item_text",
    "run_importer",
]


def _is_index(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts e.g. superscripts, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def read_index(path: Path) -> list[str]:
    """A ``token<TAB>index`` map (no header) as a list ordered by index; indices must be 0..n-1."""
    pairs: dict[int, str] = {}
    for number, line in read_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not _is_index(parts[1].strip()):
            raise DataError(f"{path}:{number}: expected 'token<TAB>index', got {line[:80]!r}")
        index = int(parts[1])
        if index in pairs:
            raise DataError(f"{path}:{number}: index {index} appears twice")
        pairs[index] = parts[0]
    if sorted(pairs) != list(range(len(pairs))):
        raise DataError(f"{path}: indices are not contiguous 0..{len(pairs) - 1}")
    return [pairs[i] for i in range(len(pairs))]


Rows = dict[int, list[tuple[list[int], int, int]]]  # user -> (history, target, line number)


def read_unisrec_inter(path: Path, num_users: int | None = None, num_items: int | None = None) -> Rows:
    """Rows of a UniSRec ``.inter`` file grouped by user: (history, target, line number).

    With ``num_users`` / ``num_items``, every user and item index must lie in ``0..num - 1``.
    """
    rows: dict[int, list[tuple[list[int], int, int]]] = {}
    lines = read_lines(path)
    header = next(lines, (1, ""))[1]
    if not header.startswith("user_id"):
        raise DataError(f"{path}:1: expected the header 'user_id:token<TAB>item_id_list:token_seq<TAB>item_id:token'")
    for number, line in lines:
        if not line:
            continue
        parts = line.split("\t")
        try:
            if len(parts) != 3:
                raise ValueError
            user, history, target = int(parts[0]), [int(t) for t in parts[1].split()], int(parts[2])
        except ValueError:
            raise DataError(
                f"{path}:{number}: expected 'user<TAB>space-separated item ids<TAB>item', got {line[:80]!r}"
            ) from None
        if not history:
            raise DataError(f"{path}:{number}: empty item history")
        if num_users is not None and not 0 <= user < num_users:
            where = f"outside 0..{num_users - 1} (the user2index file)"
            raise DataError(f"{path}:{number}: user index {_short(parts[0])} is {where}")
        if num_items is not None:
            bad = next((i for i in [*history, target] if not 0 <= i < num_items), None)
            if bad is not None:
                where = f"outside 0..{num_items - 1} (the item2index file)"
                raise DataError(f"{path}:{number}: item index {_short(str(bad))} is {where}")
        rows.setdefault(user, []).append((history, target, number))
    return rows


def _short(text: str, limit: int = 24) -> str:
    """A value for a one-line message: long ones (a 40-digit id) cut with an ellipsis."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _training_part(
    user: int, rows: list[tuple[list[int], int, int]], valid_history: list[int], path: Path, max_history: int
) -> list[int]:
    """Rebuild a user's training items from its train rows (longest prefix first, as UniSRec writes)."""
    if not rows:
        return list(valid_history)
    if len(rows[0][0]) < len(rows[-1][0]):
        rows = rows[::-1]
    part = [rows[-1][0][0]] + [target for _, target, _ in reversed(rows)]
    for k, (history, target, number) in enumerate(rows):
        position = len(part) - 1 - k
        if part[position] != target or part[max(0, position - max_history) : position] != history:
            raise DataError(f"{path}:{number}: train row of user {user} is inconsistent with its other rows")
    return part


def _missing_train_rows(train: Rows, valid: Rows, path: Path, max_history: int) -> list[str]:
    """A note naming users whose train rows are absent although their valid history implies some.

    A user with h >= 2 items before the valid target has h - 1 train rows; with none (a file cut at a
    line boundary loses the last users' rows), the history is rebuilt from the valid row, which
    holds only the last ``max_history`` items.
    """
    lacking = sorted(u for u, rows in valid.items() if u not in train and len(rows[0][0]) >= 2)
    if not lacking:
        return []
    capped = [u for u in lacking if len(valid[u][0][0]) >= max_history]
    if capped:
        loss = f"{len(capped):,} of them (e.g. user {capped[0]}) hit the {max_history}-item cap and lose early items"
    else:
        loss = "none of them hit the history cap, so no item is lost"
    return [
        f"WARNING: {path.name} has no rows for {len(lacking):,} users whose valid history implies some "
        f"(e.g. user {lacking[0]}; was the file cut?); their sequences are rebuilt from the valid histories: {loss}"
    ]


def import_unisrec(directory: Path, prefix: str | None = None, max_history: int = 50) -> Imported:
    """Read UniSRec's atomic benchmark files and rebuild each user's full chronological sequence."""
    directory = Path(directory)
    prefix = prefix or _single_prefix(directory, ".test.inter")
    path = {
        kind: directory / f"{prefix}.{kind}"
        for kind in ("train.inter", "valid.inter", "test.inter", "item2index", "user2index", "text")
    }
    for kind in ("valid.inter", "test.inter", "item2index", "user2index"):
        if not path[kind].is_file():
            raise DataError(
                f"missing file {path[kind]} "
                f"(UniSRec format needs {prefix}.train/valid/test.inter, .item2index, .user2index)"
            )
    notes: list[str] = []
    item_ids = read_index(path["item2index"])
    user_ids = read_index(path["user2index"])
    sizes = (len(user_ids), len(item_ids))
    valid = read_unisrec_inter(path["valid.inter"], *sizes)
    test = read_unisrec_inter(path["test.inter"], *sizes)
    if path["train.inter"].is_file():
        train = read_unisrec_inter(path["train.inter"], *sizes)
        notes += _missing_train_rows(train, valid, path["train.inter"], max_history)
    else:
        train = {}
        capped = sum(1 for rows in test.values() if len(rows[0][0]) >= max_history)
        notes.append(
            f"WARNING: {path['train.inter'].name} is missing; sequences are rebuilt from the test histories, "
            f"so {capped} users whose history hit the {max_history}-item cap lose their earliest items"
        )
    sequences: list[list[int]] = []
    for user in range(len(user_ids)):
        if user not in test or user not in valid:
            raise DataError(f"{path['test.inter']}: user {user} of {path['user2index'].name} has no valid/test row")
        (v_history, v_target, v_line), (t_history, t_target, t_line) = valid[user][0], test[user][0]
        if train:
            part = _training_part(user, train.get(user, []), v_history, path["train.inter"], max_history)
        else:
            part = list(v_history)  # = training part[-max_history:], exact unless capped
        if part[-max_history:] != v_history:
            raise DataError(f"{path['valid.inter']}:{v_line}: history of user {user} does not match its train rows")
        if (part + [v_target])[-max_history:] != t_history:
            raise DataError(f"{path['test.inter']}:{t_line}: history of user {user} does not end with its valid item")
        sequences.append(part + [v_target, t_target])
    texts = None
    if path["text"].is_file():
        repeated: list[tuple[int, str]] = []
        by_token = read_text_table(path["text"], repeated)
        if repeated:
            notes.append(
                f"{path['text'].name} repeats items (extra lines: {len(repeated):,}, first: line {repeated[0][0]}, "
                f"item {repeated[0][1]!r}); the first line of each item was used"
            )
        texts = [by_token.get(token, "") for token in item_ids]
        missing = sum(1 for token in item_ids if token not in by_token)
        if missing == len(item_ids):
            raise DataError(
                f"{path['text']}: its item tokens match none of the {len(item_ids)} items of {path['item2index'].name}"
            )
        if missing:
            notes.append(f"{missing} items have no line in {path['text'].name} (empty text)")
    else:
        notes.append(f"no {path['text'].name}: the dataset is ID-only (text-based methods cannot use it)")
    files = [p for p in path.values() if p.is_file()]
    return Imported(user_ids, sequences, item_ids, texts, "unisrec", files, notes)


def read_text_table(path: Path, repeated: list[tuple[int, str]] | None = None) -> dict[str, str]:
    """``item_id:token<TAB>text:token_seq`` (with header) as token -> text, first line per token.

    Lines repeating a token are appended to ``repeated`` as (line number, token).
    """
    texts: dict[str, str] = {}
    lines = read_lines(path)
    next(lines, None)
    for number, line in lines:
        if not line:
            continue
        token, sep, text = line.partition("\t")
        if not sep:
            raise DataError(f"{path}:{number}: expected 'item<TAB>text', got {line[:80]!r}")
        if token in texts and repeated is not None:
            repeated.append((number, token))
        texts.setdefault(token, text)
    return texts


def _single_prefix(directory: Path, suffix: str) -> str:
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    found = sorted(p.name[: -len(suffix)] for p in directory.glob(f"*{suffix}"))
    if len(found) != 1:
        raise DataError(
            f"{directory}: expected exactly one '*{suffix}' file, found {len(found)}: {', '.join(found) or 'none'}"
        )
    return found[0]


TEXT_FIELDS = ("title", "categories", "brand")  # UniSRec's order: title, category, brand


def item_text(record: dict) -> str:
    """Present, non-empty fields in UniSRec's order, each cleaned and followed by one space."""
    return nonempty_fields_text(record, TEXT_FIELDS, MAX_TEXT_CHARS)


def _read_json(path: Path, repeated: list[str] | None = None) -> object:
    """A JSON file; keys that repeat within an object (the last value wins) are appended to ``repeated``."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out and repeated is not None:
                repeated.append(key)
            out[key] = value
        return out

    try:
        return json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=pairs)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def import_lcrec(directory: Path, prefix: str | None = None, partial_text: bool = False) -> Imported:
    """Read LC-Rec style files; sequences are already chronological (no timestamps)."""
    directory = Path(directory)
    prefix = prefix or _single_prefix(directory, ".inter.json")
    inter_path, item_path = directory / f"{prefix}.inter.json", directory / f"{prefix}.item2id"
    if not item_path.is_file():
        raise DataError(f"missing file {item_path} (LC-Rec format needs {prefix}.inter.json and {prefix}.item2id)")
    item_ids = read_index(item_path)
    user_path = directory / f"{prefix}.user2id"
    repeated: list[str] = []
    inter = _read_json(inter_path, repeated)
    if not isinstance(inter, dict):
        raise DataError(f"{inter_path}: expected an object mapping user index to a list of item indices")
    if any(not _is_index(str(k)) for k in inter):
        bad = next(k for k in inter if not _is_index(str(k)))
        raise DataError(f"{inter_path}: user keys must be integer indices, found {_short(str(bad))!r}")
    keys = sorted(inter, key=int)
    user_ids = read_index(user_path) if user_path.is_file() else [str(k) for k in keys]
    if len(user_ids) < len(keys):
        raise DataError(f"{user_path}: {len(user_ids)} users but {inter_path.name} has {len(keys)}")
    sequences = []
    for k in keys:
        if not isinstance(inter[k], list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in inter[k]):
            raise DataError(f"{inter_path}: user {_short(k)}: expected a list of integer item indices")
        bad = next((i for i in inter[k] if not 0 <= i < len(item_ids)), None)
        if bad is not None:
            raise DataError(
                f"{inter_path}: user {_short(k)}: item index {_short(str(bad))} is outside 0..{len(item_ids) - 1} "
                f"(the indices of {item_path.name})"
            )
        if user_path.is_file() and int(k) >= len(user_ids):
            where = f"{user_path.name} (0..{len(user_ids) - 1})"
            raise DataError(f"{inter_path}: user key {_short(k)!r} is not an index of {where}")
        sequences.append(inter[k])
    user_ids = [user_ids[int(k)] for k in keys]
    notes = [] if user_path.is_file() else [f"no {user_path.name}: user tokens are the indices of {inter_path.name}"]
    if repeated:
        first = _short(repeated[0])
        repeats = f"{inter_path.name} repeats keys (extra: {len(repeated):,}, first: {first!r})"
        notes.append(f"{repeats}; the last value of each was used")
    files = [inter_path, item_path] + ([user_path] if user_path.is_file() else [])
    text_path, partial_path = directory / f"{prefix}.item.json", directory / f"{prefix}.item.partial.json"
    texts = None
    if text_path.is_file() or (partial_text and partial_path.is_file()):
        path = text_path if text_path.is_file() else partial_path
        texts, note = _lcrec_texts(path, item_ids, item_path)
        notes.append(note)
        files.append(path)
    elif partial_path.is_file():
        covered = sum(1 for t in _lcrec_texts(partial_path, item_ids, item_path)[0] if t)
        notes.append(
            f"ID-only: {partial_path.name} has text for only {covered:,} of {len(item_ids):,} items, "
            "so it was not used "
            "(pass --partial-text to import it; text-based results would then not be comparable)"
        )
    else:
        notes.append(f"no {text_path.name}: the dataset is ID-only (text-based methods cannot use it)")
    return Imported(user_ids, sequences, item_ids, texts, "lcrec", files, notes)


def _lcrec_texts(path: Path, item_ids: list[str], item_path: Path) -> tuple[list[str], str]:
    repeated: list[str] = []
    records = _read_json(path, repeated)
    if not isinstance(records, dict):
        raise DataError(f"{path}: expected an object mapping item index to a record")
    texts = [item_text(records.get(str(i)) or {}) for i in range(len(item_ids))]
    if not any(texts):
        raise DataError(f"{path}: its keys match none of the {len(item_ids)} items of {item_path.name}")
    missing = sum(1 for t in texts if not t)
    note = f"item text from {path.name} (title, categories, brand as UniSRec)" + (
        f"; {missing:,} items have none (of {len(item_ids):,})" if missing else ""
    )
    if repeated:
        first = _short(repeated[0])
        note += f"; it repeats keys (extra: {len(repeated):,}, first: {first!r}), the last value of each was used"
    return texts, note


Importer = Callable[[Path, ImportOptions], Imported]


def _unisrec(source: Path, options: ImportOptions) -> Imported:
    return import_unisrec(source)


def _lcrec(source: Path, options: ImportOptions) -> Imported:
    return import_lcrec(source, partial_text=options.partial_text)


def _movielens(source: Path, options: ImportOptions) -> Imported:
    return import_movielens(source)


def _amazon2014(source: Path, options: ImportOptions) -> Imported:
    return import_amazon2014(source)


IMPORTERS: dict[str, Importer] = {
    "unisrec": _unisrec,
    "lcrec": _lcrec,
    "recbole": import_recbole,
    "table": import_table,
    "movielens": _movielens,
    "amazon2014": _amazon2014,
}
ACCEPTED_OPTIONS = {
    "unisrec": set(),
    "lcrec": {"partial_text"},
    "recbole": {"user_col", "item_col", "time_col", "text_fields"},
    "table": {"user_col", "item_col", "time_col", "item_text", "text_fields"},
    "movielens": set(),
    "amazon2014": set(),
    "amazon": set(),
}
FORMATS = (*IMPORTERS, "amazon")  # amazon needs the catalogue entry: see recbench.data.download.import_local


def check_options(fmt: str, options: ImportOptions) -> None:
    """Reject options the format does not use (a silently ignored option is a surprise later)."""
    if fmt not in ACCEPTED_OPTIONS:
        raise UnknownNameError("import format", fmt, FORMATS)
    unused = [name for name in options.given() if name not in ACCEPTED_OPTIONS[fmt]]
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise DataError(f"{flags} does not apply to the {fmt} format")


def run_importer(fmt: str, source: Path, options: ImportOptions | None = None) -> Imported:
    """Check the options, then run the importer of ``fmt`` (not ``amazon``) on ``source``."""
    options = options or ImportOptions()
    check_options(fmt, options)
    if fmt not in IMPORTERS:
        raise UnknownNameError("import format", fmt, IMPORTERS)
    return IMPORTERS[fmt](Path(source), options)


def detect_format(source: Path) -> str:
    """Guess the import format from the files present."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist")
    if source.is_file():
        if source.name.endswith(".inter"):
            return "recbole"
        if source.suffix.lower() == ".zip" or source.name == RATINGS_FILE:
            return "movielens"
        if source.name.startswith("ratings_") and source.suffix.lower() == ".csv":
            return "amazon2014"
        if source.suffix.lower() in TABLE_SUFFIXES:
            return "table"
        raise DataError(f"cannot tell the format of {source}; pass --input-format ({', '.join(FORMATS)})")
    if any(source.glob("*.test.inter")):
        return "unisrec"
    if any(source.glob("*.inter.json")):
        return "lcrec"
    if (source / RATINGS_FILE).is_file() or any(source.glob(f"*/{RATINGS_FILE}")):
        return "movielens"
    if any(source.glob("ratings_*.csv")):  # before Amazon 2018: both have meta_*.json.gz
        return "amazon2014"
    if any(source.glob("meta_*.json.gz")) or any(source.glob("Metadata/meta_*.json.gz")):
        return "amazon"
    if any(source.glob("*.inter")):
        return "recbole"
    tables = [p for p in source.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES]
    if len(tables) == 1:
        return "table"
    raise DataError(f"cannot tell the format of {source}; pass --input-format ({', '.join(FORMATS)})")
