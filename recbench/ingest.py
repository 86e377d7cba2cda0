"""Importers: bring files in other tools' formats into the canonical Dataset.

Each importer returns ``(user_ids, sequences, item_ids, item_texts, notes)`` for
:func:`recbench.data.build_dataset`, which applies the canonical checks. Formats:

- ``unisrec``: UniSRec / RecBole benchmark files ``X.train/valid/test.inter`` + ``X.item2index``
  + ``X.user2index`` (+ ``X.text``), as released with UniSRec and VQ-Rec.
- ``lcrec``: LC-Rec style ``X.inter.json`` (user index -> chronological item indices) +
  ``X.item2id`` (+ ``X.user2id``, + ``X.item.json`` with title / categories / brand), as
  released with LC-Rec, LETTER and MQL4GRec. Item text is built as UniSRec builds it.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from recbench.errors import DataError


@dataclass
class Imported:
    """Raw material for :func:`recbench.data.build_dataset`."""

    user_ids: list[str]
    sequences: list[list[int]]  # 0-based indices into item_ids, chronological
    item_ids: list[str]
    item_texts: list[str] | None
    format: str
    files: list[Path]
    notes: list[str] = field(default_factory=list)


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without newline) of a UTF-8 text file; bad bytes name the line."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not valid UTF-8 ({err.reason} at byte {err.start})") from None


def read_index(path: Path) -> list[str]:
    """A ``token<TAB>index`` map (no header) as a list ordered by index; indices must be 0..n-1."""
    pairs: dict[int, str] = {}
    for number, line in read_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1].strip().isdigit():
            raise DataError(f"{path}:{number}: expected 'token<TAB>index', got {line[:80]!r}")
        index = int(parts[1])
        if index in pairs:
            raise DataError(f"{path}:{number}: index {index} appears twice")
        pairs[index] = parts[0]
    if sorted(pairs) != list(range(len(pairs))):
        raise DataError(f"{path}: indices are not contiguous 0..{len(pairs) - 1}")
    return [pairs[i] for i in range(len(pairs))]


def read_unisrec_inter(path: Path) -> dict[int, list[tuple[list[int], int, int]]]:
    """Rows of a UniSRec ``.inter`` file grouped by user: (history, target, line number)."""
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
            raise DataError(f"{path}:{number}: expected 'user<TAB>space-separated item ids<TAB>item', got {line[:80]!r}") from None
        if not history:
            raise DataError(f"{path}:{number}: empty item history")
        rows.setdefault(user, []).append((history, target, number))
    return rows


def _training_part(user: int, rows: list[tuple[list[int], int, int]], valid_history: list[int], path: Path, max_history: int) -> list[int]:
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


def import_unisrec(directory: Path, prefix: str | None = None, max_history: int = 50) -> Imported:
    """Read UniSRec's atomic benchmark files and rebuild each user's full chronological sequence."""
    directory = Path(directory)
    prefix = prefix or _single_prefix(directory, ".test.inter")
    path = {kind: directory / f"{prefix}.{kind}" for kind in ("train.inter", "valid.inter", "test.inter", "item2index", "user2index", "text")}
    for kind in ("valid.inter", "test.inter", "item2index", "user2index"):
        if not path[kind].is_file():
            raise DataError(f"missing file {path[kind]} (UniSRec format needs {prefix}.train/valid/test.inter, .item2index, .user2index)")
    notes: list[str] = []
    item_ids = read_index(path["item2index"])
    user_ids = read_index(path["user2index"])
    valid = read_unisrec_inter(path["valid.inter"])
    test = read_unisrec_inter(path["test.inter"])
    if path["train.inter"].is_file():
        train = read_unisrec_inter(path["train.inter"])
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
        by_token = read_text_table(path["text"])
        texts = [by_token.get(token, "") for token in item_ids]
        missing = sum(1 for token in item_ids if token not in by_token)
        if missing == len(item_ids):
            raise DataError(f"{path['text']}: its item tokens match none of the {len(item_ids)} items of {path['item2index'].name}")
        if missing:
            notes.append(f"{missing} items have no line in {path['text'].name} (empty text)")
    else:
        notes.append(f"no {path['text'].name}: the dataset is ID-only (text-based methods cannot use it)")
    files = [p for p in path.values() if p.is_file()]
    return Imported(user_ids, sequences, item_ids, texts, "unisrec", files, notes)


def read_text_table(path: Path) -> dict[str, str]:
    """``item_id:token<TAB>text:token_seq`` (with header) as token -> text, first line per token."""
    texts: dict[str, str] = {}
    lines = read_lines(path)
    next(lines, None)
    for number, line in lines:
        if not line:
            continue
        token, sep, text = line.partition("\t")
        if not sep:
            raise DataError(f"{path}:{number}: expected 'item<TAB>text', got {line[:80]!r}")
        texts.setdefault(token, text)
    return texts


def _single_prefix(directory: Path, suffix: str) -> str:
    if not directory.is_dir():
        raise DataError(f"{directory} is not a directory")
    found = sorted(p.name[: -len(suffix)] for p in directory.glob(f"*{suffix}"))
    if len(found) != 1:
        raise DataError(f"{directory}: expected exactly one '*{suffix}' file, found {len(found)}: {', '.join(found) or 'none'}")
    return found[0]


TEXT_FIELDS = ("title", "categories", "brand")  # UniSRec's order: title, category, brand
MAX_TEXT_CHARS = 2000


def clean_text(raw: object) -> str:
    """UniSRec's ``clean_text``: lists joined, HTML unescaped, quotes/newlines removed, one final dot."""
    if isinstance(raw, list):
        raw = " ".join(str(part) for part in raw)
    elif isinstance(raw, dict):
        raw = str(raw)
    text = re.sub(r'["\n\r]*', "", html.unescape(str(raw)))
    text = text.rstrip(".") + "."
    return "" if len(text) >= MAX_TEXT_CHARS else text


def item_text(record: dict) -> str:
    """Present fields in UniSRec's order, each cleaned and followed by one space."""
    return "".join(clean_text(record[name]) + " " for name in TEXT_FIELDS if record.get(name) not in (None, ""))


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None


def import_lcrec(directory: Path, prefix: str | None = None) -> Imported:
    """Read LC-Rec style files; sequences are already chronological (no timestamps)."""
    directory = Path(directory)
    prefix = prefix or _single_prefix(directory, ".inter.json")
    inter_path, item_path = directory / f"{prefix}.inter.json", directory / f"{prefix}.item2id"
    if not item_path.is_file():
        raise DataError(f"missing file {item_path} (LC-Rec format needs {prefix}.inter.json and {prefix}.item2id)")
    item_ids = read_index(item_path)
    user_path = directory / f"{prefix}.user2id"
    inter = _read_json(inter_path)
    if not isinstance(inter, dict):
        raise DataError(f"{inter_path}: expected an object mapping user index to a list of item indices")
    keys = sorted(inter, key=lambda k: int(k) if str(k).isdigit() else -1)
    if any(not str(k).isdigit() for k in keys):
        raise DataError(f"{inter_path}: user keys must be integer indices")
    user_ids = read_index(user_path) if user_path.is_file() else [str(k) for k in keys]
    if len(user_ids) < len(keys):
        raise DataError(f"{user_path}: {len(user_ids)} users but {inter_path.name} has {len(keys)}")
    sequences = [[int(i) for i in inter[k]] for k in keys]
    user_ids = [user_ids[int(k)] for k in keys]
    notes = [] if user_path.is_file() else [f"no {user_path.name}: user tokens are the indices of {inter_path.name}"]
    texts, files = None, [inter_path, item_path] + ([user_path] if user_path.is_file() else [])
    text_path = directory / f"{prefix}.item.json"
    if text_path.is_file():
        records = _read_json(text_path)
        texts = [item_text(records.get(str(i), {})) for i in range(len(item_ids))]
        if not any(texts):
            raise DataError(f"{text_path}: its keys match none of the {len(item_ids)} items of {item_path.name}")
        missing = sum(1 for t in texts if not t)
        notes.append(f"item text from {text_path.name} (title, categories, brand as UniSRec)" + (f"; {missing} items have none" if missing else ""))
        files.append(text_path)
    else:
        notes.append(f"no {text_path.name}: the dataset is ID-only (text-based methods cannot use it)")
    return Imported(user_ids, sequences, item_ids, texts, "lcrec", files, notes)


IMPORTERS = {"unisrec": import_unisrec, "lcrec": import_lcrec}


def detect_format(directory: Path) -> str:
    """Guess the import format from the files present."""
    directory = Path(directory)
    if not directory.exists():
        raise DataError(f"{directory} does not exist")
    if directory.is_dir() and any(directory.glob("*.test.inter")):
        return "unisrec"
    if directory.is_dir() and any(directory.glob("*.inter.json")):
        return "lcrec"
    raise DataError(f"cannot tell the format of {directory}; pass --format ({', '.join(IMPORTERS)})")
