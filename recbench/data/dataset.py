"""The canonical Dataset (design §3): what every method, the Trainer and the Evaluator read.

On disk, ``$RECBENCH_HOME/datasets/<name>/`` holds

- ``sequences.npz``: ``offsets`` (int64, users + 1) and ``items`` (int32): user ``u``'s
  chronological item ids are ``items[offsets[u]:offsets[u + 1]]``; item ids are 1..N, 0 = padding;
- ``items.jsonl``: one line per item id 1..N, ``{"id": raw_token, "text": str | null}``;
- ``users.txt``: raw user token of user ``u`` on line ``u``;
- ``manifest.json``: counts, fingerprint, source files and checksums, preprocessing parameters,
  format version. It is written last, so a directory without it is not a dataset.

Splits are leave-one-out and derived in memory: test target = last item, valid target = second to
last, training = the rest. The valid item is never a training target and the test item is never
seen in training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recbench.data.catalog import Counts, datasets_dir, get_dataset_spec
from recbench.errors import DataError, UnknownNameError
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

    def subsample_users(self, fraction: float, seed: int) -> "Dataset":
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
        return subset


def compute_fingerprint(dataset: Dataset) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(dataset.offsets, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(dataset.items, dtype=np.int32).tobytes())
    digest.update("\n".join(dataset.item_ids).encode())
    digest.update(json.dumps(dataset.item_texts, ensure_ascii=False).encode())
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
    return dataset, report


def count_mismatches(dataset: Dataset, expected: Counts | None) -> list[str]:
    """One message per count that differs from the catalogue, naming both numbers."""
    if expected is None:
        return []
    got = dataset.counts
    return [
        f"{dataset.name}: {what} = {getattr(got, what):,} but datasets.toml expects {getattr(expected, what):,}"
        for what in ("users", "items", "interactions")
        if getattr(got, what) != getattr(expected, what)
    ]


def dataset_path(name: str, root: Path | None = None) -> Path:
    """``<root>/<name>``; the name is checked first, so no name can point outside ``root``."""
    return (root or datasets_dir()) / check_name("dataset", name).lower()


def save_dataset(dataset: Dataset, root: Path | None = None) -> Path:
    """Write atomically: a temporary sibling directory, then a rename over the old one."""
    final = dataset_path(dataset.name, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        np.savez(tmp / "sequences.npz", offsets=dataset.offsets.astype(np.int64), items=dataset.items.astype(np.int32))
        with open(tmp / "items.jsonl", "w", encoding="utf-8") as f:
            texts = dataset.item_texts or [None] * dataset.num_items
            for token, text in zip(dataset.item_ids, texts):
                f.write(json.dumps({"id": token, "text": text}, ensure_ascii=False) + "\n")
        (tmp / "users.txt").write_text("".join(f"{u}\n" for u in dataset.user_ids), encoding="utf-8")
        (tmp / "manifest.json").write_text(json.dumps(dataset.manifest, indent=2), encoding="utf-8")
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def downloaded_names(root: Path | None = None) -> list[str]:
    """Names of every canonical Dataset under ``root`` (catalogued or imported)."""
    base = root or datasets_dir()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "manifest.json").is_file())


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
    return (dataset_path(name, root) / "manifest.json").is_file()


def load_dataset(name: str, root: Path | None = None) -> Dataset:
    """Load a canonical Dataset; a missing one names the command that makes it."""
    path = dataset_path(name, root)
    if not (path / "manifest.json").is_file():
        check_dataset_name(name, root)  # unknown names get suggestions
        raise DataError(f"dataset '{name}' is not downloaded (no {path / 'manifest.json'}); run `recbench download {name}`")
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format version {manifest.get('format_version')} but this recbench reads {FORMAT_VERSION}; re-run `recbench download {name}`")
    arrays = np.load(path / "sequences.npz", allow_pickle=False)
    item_ids, texts = [], []
    with open(path / "items.jsonl", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            item_ids.append(record["id"])
            texts.append(record["text"])
    user_ids = (path / "users.txt").read_text(encoding="utf-8").splitlines()
    return Dataset(
        name=name.lower(),  # from the directory asked for, never from file contents
        offsets=arrays["offsets"],
        items=arrays["items"],
        item_ids=item_ids,
        user_ids=user_ids,
        item_texts=texts if any(t is not None for t in texts) else None,
        manifest=manifest,
    )


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
    manifest = {"union": {"domains": names, "fingerprints": {d.name: d.fingerprint for d in datasets}, "item_ranges": ranges}}
    union, _ = build_dataset("+".join(names), user_ids, sequences, item_ids, texts if any(texts) else None, manifest)
    return union
