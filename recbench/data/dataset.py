"""The canonical Dataset (docs/architecture.md, Data): what every method, the Trainer and the Evaluator read.

On disk, ``$RECBENCH_HOME/datasets/<name>/`` holds

- ``sequences.npz``: ``offsets`` (int64, users + 1) and ``items`` (int32): user ``u``'s
  chronological item ids are ``items[offsets[u]:offsets[u + 1]]``; item ids are 1..N, 0 = padding;
- ``items.jsonl``: one line per item id 1..N, ``{"id": raw_token, "text": str | null}``;
- ``users.txt``: raw user token of user ``u`` on line ``u``;
- ``manifest.json``: counts, fingerprint, source files and checksums, preprocessing parameters,
  format version. It is written last, so a directory without it is not a dataset.

Replacing a dataset never loses the old one. :func:`save_dataset` holds the per-name lock
(:func:`dataset_lock`, also held for a whole import), writes the new version into a temporary
sibling ``.<name>.tmp-*``, renames the old directory to ``.<name>.old-*``, renames the new one into
place and deletes the old one. A process killed between the two renames leaves ``<name>`` missing
and a complete ``.<name>.old-*``: the next load, listing or save of that name (once no process holds
its lock) renames it back. Other leftovers are deleted then; they are never listed as datasets.

Every load checks what is cheap (:func:`load_dataset`): array names, dtypes and shapes, offsets,
item id range, line counts against the manifest. :func:`verify_fingerprint` also rehashes the data
against the fingerprint recorded at import.

Splits are leave-one-out and derived in memory: test target = last item, valid target = second to
last, training = the rest. The valid item is never a training target and the test item is never
seen in training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from recbench.data.catalog import Counts, datasets_dir, get_dataset_spec
from recbench.errors import DataError, UnknownNameError
from recbench.files import LockedError, exclusive_lock
from recbench.names import check_name

FORMAT_VERSION = 1
MIN_INTERACTIONS = 3  # one training item, one valid target, one test target
Split = Literal["valid", "test"]


@dataclass
class Dataset:
    """Per-user chronological item sequences, the item vocabulary and item texts."""

    name: str
    offsets: np.ndarray  # (U + 1,) int64
    items: np.ndarray  # (total interactions,) int32, ids 1..N
    item_ids: list[str]  # raw token of item id i at position i - 1
    user_ids: list[str]  # raw token of user u at position u
    item_texts: list[str] | None = None  # text of item id i at position i - 1
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        """N: item ids are 1..N; score matrices have N + 1 columns (column 0 = padding)."""
        return len(self.item_ids)

    @property
    def num_interactions(self) -> int:
        return int(self.offsets[-1])

    @property
    def counts(self) -> Counts:
        return Counts(self.num_users, self.num_items, self.num_interactions)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def fingerprint(self) -> str:
        """sha256 over sequences, item tokens and texts: changes whenever the data changes."""
        return self.manifest.get("fingerprint") or compute_fingerprint(self)

    @property
    def has_text(self) -> bool:
        return self.item_texts is not None and any(self.item_texts)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def train_sequences(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR (offsets, items) of every user's training part: all but the last two items."""
        lengths = self.lengths - 2
        offsets = np.zeros(self.num_users + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        keep = np.ones(len(self.items), dtype=bool)
        keep[self.offsets[1:] - 1] = False
        keep[self.offsets[1:] - 2] = False
        return offsets, self.items[keep]

    def eval_examples(self, split: Split, max_history: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Histories and targets of every user for ``split``.

        Returns ``(histories, lengths, targets)``: ``histories`` is (U, max_history) int64, oldest
        first and right-padded with 0, holding the last ``max_history`` items before the target
        (valid: the training part; test: training part + valid item).
        """
        if split not in ("valid", "test"):
            raise DataError(f"unknown split '{split}': expected 'valid' or 'test'")
        shift = 1 if split == "test" else 2
        ends = self.offsets[1:] - shift  # index of the target
        targets = self.items[ends].astype(np.int64)
        starts = np.maximum(self.offsets[:-1], ends - max_history)
        lengths = ends - starts
        columns = np.arange(max_history)
        index = starts[:, None] + columns[None, :]
        valid = columns[None, :] < lengths[:, None]
        histories = np.where(valid, self.items[np.minimum(index, len(self.items) - 1)], 0).astype(np.int64)
        return histories, lengths.astype(np.int64), targets

    def subsample_users(self, fraction: float, seed: int) -> Dataset:
        """A copy keeping a random ``fraction`` of users (all items stay in the vocabulary)."""
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(self.num_users, size=max(1, round(fraction * self.num_users)), replace=False))
        sequences = [self.sequence(u) for u in keep]
        offsets = np.zeros(len(keep) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in sequences], out=offsets[1:])
        manifest = {**self.manifest, "subsample": {"fraction": fraction, "seed": seed}}
        manifest.pop("fingerprint", None)
        subset = Dataset(
            name=f"{self.name}@{fraction:g}",
            offsets=offsets,
            items=np.concatenate(sequences).astype(np.int32),
            item_ids=self.item_ids,
            user_ids=[self.user_ids[u] for u in keep],
            item_texts=self.item_texts,
            manifest=manifest,
        )
        subset.manifest["fingerprint"] = compute_fingerprint(subset)
        subset.manifest["users_sha256"] = users_digest(subset.user_ids)
        return subset


def users_digest(user_ids: list[str]) -> str:
    """sha256 of the user tokens in order: recorded next to the fingerprint, which leaves them out."""
    return hashlib.sha256("\n".join(user_ids).encode()).hexdigest()


def compute_fingerprint(dataset: Dataset) -> str:
    """sha256 over sequences, item tokens and texts (not user tokens: run ids depend on it unchanged).

    A dataset imported with an interaction filter (manifest ``filter``, :mod:`recbench.data.filters`)
    also hashes the filter, so it never shares a fingerprint with an unfiltered copy, even where the
    filter removed nothing. Unfiltered datasets hash exactly as before filters existed.
    """
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(dataset.offsets, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(dataset.items, dtype=np.int32).tobytes())
    digest.update("\n".join(dataset.item_ids).encode())
    digest.update(json.dumps(dataset.item_texts, ensure_ascii=False).encode())
    applied = dataset.manifest.get("filter")
    if applied is not None:
        digest.update(b"\0filter\0" + json.dumps(applied, sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class BuildReport:
    """What the canonical checks dropped while building a Dataset."""

    dropped_short_users: int = 0
    dropped_unused_items: int = 0
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = list(self.notes)
        if self.dropped_short_users:
            out.append(f"dropped {self.dropped_short_users} users with fewer than {MIN_INTERACTIONS} interactions")
        if self.dropped_unused_items:
            out.append(f"dropped {self.dropped_unused_items} items that no kept user interacted with")
        return out


def build_dataset(
    name: str,
    user_ids: list[str],
    sequences: list[np.ndarray] | list[list[int]],
    item_ids: list[str],
    item_texts: list[str] | None,
    manifest: dict[str, Any] | None = None,
) -> tuple[Dataset, BuildReport]:
    """Apply the canonical checks and build a Dataset.

    ``sequences[u]`` holds user ``u``'s chronological items as 0-based indices into ``item_ids``.
    Users with fewer than 3 interactions are dropped (they have no training item); items no kept
    user interacted with are dropped; the remaining items keep their relative order and become
    ids 1..N.
    """
    report = BuildReport()
    if len(set(item_ids)) != len(item_ids):
        raise DataError(f"{name}: duplicate item tokens in the item vocabulary")
    if len(set(user_ids)) != len(user_ids):
        raise DataError(f"{name}: duplicate user tokens")
    if item_texts is not None and len(item_texts) != len(item_ids):
        raise DataError(f"{name}: {len(item_texts)} item texts for {len(item_ids)} items")
    arrays = [np.asarray(s, dtype=np.int64) for s in sequences]
    keep_users = [u for u, s in enumerate(arrays) if len(s) >= MIN_INTERACTIONS]
    report.dropped_short_users = len(arrays) - len(keep_users)
    if not keep_users:
        raise DataError(f"{name}: empty after filtering (no user has {MIN_INTERACTIONS} or more interactions)")
    kept = [arrays[u] for u in keep_users]
    flat = np.concatenate(kept)
    if flat.min() < 0 or flat.max() >= len(item_ids):
        raise DataError(f"{name}: an item index is outside the item vocabulary (0..{len(item_ids) - 1})")
    used = np.zeros(len(item_ids), dtype=bool)
    used[flat] = True
    report.dropped_unused_items = int((~used).sum())
    new_id = np.cumsum(used).astype(np.int64)  # old index -> new id (1..N) for used items
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum([len(s) for s in kept], out=offsets[1:])
    dataset = Dataset(
        name=name,
        offsets=offsets,
        items=new_id[flat].astype(np.int32),
        item_ids=[t for t, u in zip(item_ids, used) if u],
        user_ids=[user_ids[u] for u in keep_users],
        item_texts=[t for t, u in zip(item_texts, used) if u] if item_texts is not None else None,
        manifest=dict(manifest or {}),
    )
    dataset.manifest.update(
        format_version=FORMAT_VERSION,
        name=name,
        counts={"users": dataset.num_users, "items": dataset.num_items, "interactions": dataset.num_interactions},
        has_text=dataset.has_text,
        dropped=report.lines(),
    )
    dataset.manifest["fingerprint"] = compute_fingerprint(dataset)
    dataset.manifest["users_sha256"] = users_digest(dataset.user_ids)
    return dataset, report


def count_mismatches(dataset: Dataset, expected: Counts | None) -> list[str]:
    """One message per count that differs from the catalogue, naming both numbers."""
    return compare_counts(dataset.name, dataset.counts, expected)


def compare_counts(name: str, got: Counts, expected: Counts | None, stage: str = "") -> list[str]:
    """One message per count of ``got`` that differs from ``expected``; ``stage`` says when it was counted."""
    if expected is None:
        return []
    when = f"{stage}, " if stage else ""
    return [
        f"{name}: {when}{what} = {getattr(got, what):,} but datasets.toml expects {getattr(expected, what):,}"
        for what in ("users", "items", "interactions")
        if getattr(got, what) != getattr(expected, what)
    ]


def dataset_path(name: str, root: Path | None = None) -> Path:
    """``<root>/<name>``; the name is checked first, so no name can point outside ``root``."""
    return (root or datasets_dir()) / check_name("dataset", name).lower()


_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-[A-Za-z0-9_-]+")
_held = threading.local()  # per thread: lock files held, with their nesting depth


@contextlib.contextmanager
def dataset_lock(name: str, root: Path | None = None) -> Iterator[None]:
    """Hold the lock of dataset ``name`` for the block (waiting for another holder): one import at a time.

    Re-entrant within a thread, so an import holding it can call :func:`save_dataset`.
    """
    lock = _lock_file(dataset_path(name, root))
    depth: dict[Path, int] = _held.__dict__.setdefault("depth", {})
    if lock in depth:
        depth[lock] += 1
        try:
            yield
        finally:
            depth[lock] -= 1
        return
    with exclusive_lock(lock, f"dataset '{name}'", wait=True):
        depth[lock] = 1
        try:
            yield
        finally:
            del depth[lock]


def _lock_file(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


def _leftovers(final: Path) -> list[Path]:
    """Temporary and old copies of ``final`` left by an interrupted save."""
    if not final.parent.is_dir():
        return []
    found = []
    for path in final.parent.iterdir():
        match = _LEFTOVER.fullmatch(path.name)
        if match and match["name"] == final.name and path.is_dir():
            found.append(path)
    return found


def _settle(final: Path) -> None:
    """With the name's lock held: restore an old copy if a save died between its renames, delete leftovers."""
    leftovers = _leftovers(final)
    if not final.exists():
        olds = [p for p in leftovers if p.name.startswith(f".{final.name}.old-") and (p / "manifest.json").is_file()]
        if olds:
            newest = max(olds, key=lambda p: p.stat().st_mtime)
            os.replace(newest, final)
            leftovers.remove(newest)
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


def _recover(final: Path) -> None:
    """Settle ``final`` unless a process (this one included) is saving it right now."""
    lock = _lock_file(final)
    if not _leftovers(final) or lock in _held.__dict__.get("depth", {}):
        return
    try:
        with exclusive_lock(lock, f"dataset '{final.name}'", wait=False):
            _settle(final)
    except LockedError:
        pass  # its holder is alive and finishes (or, if killed, the next caller settles it)


def _write_synced(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def save_dataset(dataset: Dataset, root: Path | None = None) -> Path:
    """Write ``dataset`` so that a reader, or a kill at any point, never sees a half-written or lost one.

    See the module docstring: temporary sibling, old copy renamed away, new one renamed in.
    """
    final = dataset_path(dataset.name, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    with dataset_lock(dataset.name, root):
        _settle(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            offsets, items = dataset.offsets.astype(np.int64), dataset.items.astype(np.int32)
            _write_synced(tmp / "sequences.npz", lambda f: np.savez(f, offsets=offsets, items=items))
            texts = dataset.item_texts or [None] * dataset.num_items
            records = ({"id": token, "text": text} for token, text in zip(dataset.item_ids, texts))
            lines = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            _write_synced(tmp / "items.jsonl", lambda f: f.write(lines.encode("utf-8")))
            users = "".join(f"{u}\n" for u in dataset.user_ids).encode("utf-8")
            _write_synced(tmp / "users.txt", lambda f: f.write(users))
            manifest = json.dumps(dataset.manifest, indent=2).encode("utf-8")
            _write_synced(tmp / "manifest.json", lambda f: f.write(manifest))  # last: it marks the copy complete
            if final.exists():
                old = final.with_name(f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
                os.replace(final, old)
                os.replace(tmp, final)  # a kill before this line leaves `old` for _settle to restore
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(final.parent)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def downloaded_names(root: Path | None = None) -> list[str]:
    """Names of every canonical Dataset under ``root`` (catalogued or imported); never a leftover copy."""
    base = root or datasets_dir()
    if not base.is_dir():
        return []
    interrupted = {m["name"] for p in base.iterdir() if (m := _LEFTOVER.fullmatch(p.name)) and m["kind"] == "old"}
    for name in interrupted:
        _recover(base / name)
    return sorted(p.name for p in base.iterdir() if not p.name.startswith(".") and (p / "manifest.json").is_file())


def read_manifest(name: str, root: Path | None = None) -> dict[str, Any]:
    """The manifest of a downloaded dataset, checked as on load (:class:`DataError` if damaged)."""
    path = dataset_path(name, root) / "manifest.json"
    if not path.is_file():
        _recover(path.parent)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"dataset '{name}' is not downloaded (no {path}); run `recbench download {name}`") from None
    return _check_manifest(path, raw, name.lower())


def check_dataset_name(name: str, root: Path | None = None) -> None:
    """Raise :class:`UnknownNameError` unless ``name`` is catalogued or already on disk."""
    if check_name("dataset", name).lower() in downloaded_names(root):
        return
    try:
        get_dataset_spec(name)
    except UnknownNameError:
        from recbench.data.catalog import dataset_names

        raise UnknownNameError("dataset", name, set(dataset_names()) | set(downloaded_names(root))) from None


def is_downloaded(name: str, root: Path | None = None) -> bool:
    """Whether dataset ``name`` is on disk (restoring it first if a save was interrupted)."""
    path = dataset_path(name, root)
    if not (path / "manifest.json").is_file():
        _recover(path)
    return (path / "manifest.json").is_file()


def load_dataset(name: str, root: Path | None = None) -> Dataset:
    """Load a canonical Dataset after the cheap checks; a missing one names the command that makes it.

    Damaged files (truncated, edited, not the format) raise :class:`DataError` naming the file and
    what is wrong. The content is not rehashed here: see :func:`verify_fingerprint`.
    """
    path = dataset_path(name, root)
    if not (path / "manifest.json").is_file():
        _recover(path)
    if not (path / "manifest.json").is_file():
        check_dataset_name(name, root)  # unknown names get suggestions
        missing = path / "manifest.json"
        raise DataError(f"dataset '{name}' is not downloaded (no {missing}); run `recbench download {name}`")
    for _ in range(3):
        try:
            return _read_dataset(path, name.lower())
        except _Replaced:
            continue  # a save swapped the directory while we read it: read the new one
    raise DataError(f"{path}: replaced again and again while being read; try once the import writing it has finished")


def load_run_dataset(record: Mapping[str, Any], root: Path | None = None) -> Dataset:
    """The dataset a run was made on, from its ``config.json`` record, without the fingerprint check.

    A run on a share of the users (``NAME@FRACTION``, :meth:`Dataset.subsample_users`) records the
    fraction and seed under ``"subsample"``: the share is drawn again from ``NAME`` with them.
    """
    name = str(record["dataset"])
    if "@" not in name:
        return load_dataset(name, root)
    share = record.get("subsample")
    if not isinstance(share, Mapping) or not {"fraction", "seed"} <= share.keys():
        raise DataError(
            f"'{name}' is a share of the users, and the run does not record how it was drawn (no 'subsample' "
            "in its config.json: it predates that record); from Python, draw it again with "
            "load_dataset(NAME).subsample_users(fraction, seed) and pass it as the dataset"
        )
    base = name.rpartition("@")[0]
    return load_dataset(base, root).subsample_users(float(share["fraction"]), int(share["seed"]))


class _Replaced(Exception):
    """The dataset directory was replaced while being read."""


def _damaged(path: Path | str, problem: str, name: str) -> DataError:
    return DataError(f"{path}: {problem}; the dataset is damaged, re-run `recbench download {name}`")


def _read_dataset(path: Path, name: str) -> Dataset:
    """Read the four files from one directory (held open, so a concurrent save cannot mix two versions)."""
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:

        def read(file: str) -> bytes:
            try:
                with open(file, "rb", opener=lambda p, flags: os.open(p, flags, dir_fd=dir_fd)) as f:
                    return f.read()
            except FileNotFoundError:
                with contextlib.suppress(OSError):
                    if os.stat(path).st_ino != os.fstat(dir_fd).st_ino:
                        raise _Replaced from None
                raise _damaged(path / file, "missing", name) from None

        manifest = _check_manifest(path / "manifest.json", read("manifest.json"), name)
        counts = manifest["counts"]
        offsets, items = _check_sequences(path / "sequences.npz", read("sequences.npz"), counts, name)
        item_ids, texts = _check_items(path / "items.jsonl", read("items.jsonl"), counts["items"], name)
        user_ids = _check_users(path / "users.txt", read("users.txt"), counts["users"], name)
    finally:
        os.close(dir_fd)
    return Dataset(
        name=name,  # from the directory asked for, never from file contents
        offsets=offsets,
        items=items,
        item_ids=item_ids,
        user_ids=user_ids,
        item_texts=texts if any(t is not None for t in texts) else None,
        manifest=manifest,
    )


def _check_manifest(path: Path, raw: bytes, name: str) -> dict[str, Any]:
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise _damaged(path, f"not valid UTF-8 ({err.reason} at byte {err.start})", name) from None
    except json.JSONDecodeError as err:
        raise _damaged(path, f"not valid JSON ({err.msg} at line {err.lineno})", name) from None
    if not isinstance(manifest, dict):
        raise _damaged(path, f"expected a JSON object, found {type(manifest).__name__}", name)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path.parent}: format version {manifest.get('format_version')} but this recbench reads {FORMAT_VERSION}; "
            f"re-run `recbench download {name}`"
        )
    counts = manifest.get("counts")
    keys = ("users", "items", "interactions")
    if not isinstance(counts, dict) or not all(type(counts.get(k)) is int and counts[k] >= 0 for k in keys):
        raise _damaged(path, "no valid 'counts' (users, items, interactions)", name)
    return manifest


def _check_sequences(path: Path, raw: bytes, counts: dict[str, int], name: str) -> tuple[np.ndarray, np.ndarray]:
    import io

    if not raw:
        raise _damaged(path, "empty file", name)
    try:
        archive = np.load(io.BytesIO(raw), allow_pickle=False)  # anything but .npy/.npz falls to pickle: refused
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise _damaged(path, "a single .npy array, not a .npz archive of 'offsets' and 'items'", name)
        with archive:
            missing = [k for k in ("offsets", "items") if k not in archive.files]
            if missing:
                raise _damaged(path, f"no array {', '.join(repr(k) for k in missing)}", name)
            offsets, items = archive["offsets"], archive["items"]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _damaged(path, f"not a readable .npz archive ({type(err).__name__}: {err})", name) from None
    for key, array, dtype in (("offsets", offsets, np.int64), ("items", items, np.int32)):
        if array.dtype != dtype or array.ndim != 1:
            problem = f"'{key}' is {array.dtype} of shape {array.shape}, expected 1-D {np.dtype(dtype)}"
            raise _damaged(path, problem, name)
    if len(offsets) != counts["users"] + 1:
        problem = f"'offsets' has {len(offsets):,} entries but manifest.json counts {counts['users']:,} users (+ 1)"
        raise _damaged(path, problem, name)
    if offsets[0] != 0 or offsets[-1] != len(items):
        problem = f"'offsets' runs from {offsets[0]} to {offsets[-1]}, expected 0 to {len(items):,} (len(items))"
        raise _damaged(path, problem, name)
    lengths = np.diff(offsets)
    if (lengths < MIN_INTERACTIONS).any():
        user = int(np.flatnonzero(lengths < MIN_INTERACTIONS)[0])
        too_few = f"give user {user} {lengths[user]} interactions (fewer than {MIN_INTERACTIONS})"
        what = "decrease" if lengths[user] < 0 else too_few
        raise _damaged(path, f"'offsets' {what} at position {user}", name)
    if len(items) != counts["interactions"]:
        raise _damaged(path, f"{len(items):,} interactions but manifest.json counts {counts['interactions']:,}", name)
    if len(items) and (items.min() < 1 or items.max() > counts["items"]):
        raise _damaged(path, f"item ids run from {items.min()} to {items.max()}, outside 1..{counts['items']:,}", name)
    return offsets, items


def _lines(path: Path, raw: bytes, name: str) -> list[str]:
    """The lines of a file recbench wrote: UTF-8, every line ended by a newline (a cut file is not)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _damaged(path, f"not valid UTF-8 ({err.reason} at byte {err.start})", name) from None
    if text and not text.endswith("\n"):
        raise _damaged(path, f"line {text.count(chr(10)) + 1} has no newline at its end (the file was cut)", name)
    return text.split("\n")[:-1]


def _check_items(path: Path, raw: bytes, expected: int, name: str) -> tuple[list[str], list[str | None]]:
    lines = _lines(path, raw, name)
    if len(lines) != expected:
        raise _damaged(path, f"{len(lines):,} lines but manifest.json counts {expected:,} items", name)
    item_ids, texts = [], []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise _damaged(f"{path}:{number}", f"not valid JSON ({err.msg})", name) from None
        valid = isinstance(record, dict) and isinstance(record.get("id"), str)
        if not valid or not isinstance(record.get("text"), (str, type(None))):
            raise _damaged(f"{path}:{number}", 'expected {"id": string, "text": string or null}', name)
        item_ids.append(record["id"])
        texts.append(record.get("text"))
    if len(set(item_ids)) != len(item_ids):
        raise _damaged(path, "an item token appears twice", name)
    return item_ids, texts


def _check_users(path: Path, raw: bytes, expected: int, name: str) -> list[str]:
    user_ids = _lines(path, raw, name)
    if len(user_ids) != expected:
        raise _damaged(path, f"{len(user_ids):,} lines but manifest.json counts {expected:,} users", name)
    if len(set(user_ids)) != len(user_ids):
        raise _damaged(path, "a user token appears twice", name)
    return user_ids


def verify_fingerprint(dataset: Dataset) -> str:
    """Rehash ``dataset`` and compare with the fingerprint recorded in its manifest; return it.

    Raises :class:`DataError` if none is recorded or the data no longer matches it (a file was
    edited after the import). Costs one sha256 pass over the sequences, tokens and texts.
    """
    recorded = dataset.manifest.get("fingerprint")
    if not isinstance(recorded, str) or not recorded:
        name = dataset.name
        raise DataError(f"dataset '{name}': manifest.json records no fingerprint; re-run `recbench download {name}`")
    computed = compute_fingerprint(dataset)
    users = dataset.manifest.get("users_sha256")  # absent from datasets saved by older versions
    if computed != recorded or (users is not None and users != users_digest(dataset.user_ids)):
        what = f"recorded {recorded[:12]}, computed {computed[:12]}" if computed != recorded else "user tokens"
        raise DataError(
            f"dataset '{dataset.name}': its files do not match the fingerprint in manifest.json ({what}): "
            f"they were changed after the import; re-run `recbench download {dataset.name}`"
        )
    return computed


def union_of(datasets: list[Dataset]) -> Dataset:
    """The union of several domains for pre-training: users and items kept apart per domain.

    Item and user tokens are prefixed ``"<domain>-"`` so no id is shared across domains (no
    alignment); each item keeps its text, and the manifest lists the domains and their item id
    ranges (domain k owns ids ``item_ranges[k][0] .. item_ranges[k][1]``).
    """
    if not datasets:
        raise DataError("a union needs at least one source dataset")
    names = sorted(d.name for d in datasets)
    datasets = sorted(datasets, key=lambda d: d.name)
    item_offset, sequences, user_ids, item_ids, texts, ranges = 0, [], [], [], [], []
    for d in datasets:
        sequences += [d.sequence(u).astype(np.int64) - 1 + item_offset for u in range(d.num_users)]
        user_ids += [f"{d.name}-{u}" for u in d.user_ids]
        item_ids += [f"{d.name}-{i}" for i in d.item_ids]
        texts += d.item_texts if d.item_texts is not None else [""] * d.num_items
        ranges.append([item_offset + 1, item_offset + d.num_items])
        item_offset += d.num_items
    manifest = {
        "union": {"domains": names, "fingerprints": {d.name: d.fingerprint for d in datasets}, "item_ranges": ranges}
    }
    union, _ = build_dataset("+".join(names), user_ids, sequences, item_ids, texts if any(texts) else None, manifest)
    return union
