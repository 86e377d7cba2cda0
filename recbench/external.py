"""Evaluate results produced by other tools with recbench's one Evaluator protocol.

Two documented formats, for the dataset's leave-one-out ``test`` targets:

- ranked lists (``.tsv``, ``.csv``, ``.txt``): one line per user, ``user item1 item2 ...``
  separated by tabs, commas or spaces, using the dataset's raw user and item tokens (those of
  ``users.txt`` / ``items.jsonl``), best first. The rank of the held-out item is its position in
  the list; an item missing from the list ties with every other unlisted item at the bottom, so
  its rank is N (pessimistic, as every tie in recbench). Metrics@k are exact for k up to the
  list length and lower bounds beyond it.
- a score matrix (``.npy``): shape (users, N + 1) with column i = item id i (column 0 ignored),
  or (users, N) with column j = item id j + 1; rows in the dataset's user order. Ranks follow
  from the scores exactly as for a recbench model (pessimistic ties, padding excluded).

The result is stored as a finished run (method name = the given label, no valid split), so it
appears in ``recbench leaderboard`` next to recbench's own runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from recbench.data import Dataset, load_dataset
from recbench.errors import DataError
from recbench.evaluate import TIE_POLICY, ranks_from_scores
from recbench.ingest import read_lines
from recbench.metrics import EvalResult, metrics_from_ranks
from recbench.runs import RunRecord

_SEPARATOR = re.compile(r"[\t, ]+")


def ranks_from_lists(path: Path, dataset: Dataset, targets: np.ndarray) -> np.ndarray:
    """Per-user ranks of ``targets`` (U,) in a ranked-list file (see the module docstring)."""
    user_index = {token: u for u, token in enumerate(dataset.user_ids)}
    item_id = {token: i + 1 for i, token in enumerate(dataset.item_ids)}
    ranks = np.zeros(dataset.num_users, dtype=np.int32)
    longest = 0
    for number, line in read_lines(path):
        fields = [f for f in _SEPARATOR.split(line.strip()) if f]
        if not fields:
            continue
        user = user_index.get(fields[0])
        if user is None:
            raise DataError(f"{path}:{number}: unknown user token {fields[0]!r} (not in dataset '{dataset.name}')")
        if ranks[user]:
            raise DataError(f"{path}:{number}: user {fields[0]!r} has a second line")
        listed = []
        for token in fields[1:]:
            if token not in item_id:
                raise DataError(f"{path}:{number}: unknown item token {token!r} (not in dataset '{dataset.name}')")
            listed.append(item_id[token])
        listed = list(dict.fromkeys(listed))  # first occurrence counts
        longest = max(longest, len(listed))
        ranks[user] = listed.index(targets[user]) + 1 if targets[user] in listed else dataset.num_items
    missing = int((ranks == 0).sum())
    if missing:
        raise DataError(f"{path}: {missing} of {dataset.num_users} users have no line")
    return ranks


def ranks_from_score_matrix(path: Path, dataset: Dataset, targets: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Per-user ranks from a (users, N + 1) or (users, N) ``.npy`` score matrix."""
    scores = np.load(path, mmap_mode="r")
    if scores.ndim != 2 or scores.shape[0] != dataset.num_users or scores.shape[1] not in (dataset.num_items, dataset.num_items + 1):
        raise DataError(f"{path}: score matrix of shape {scores.shape}, expected ({dataset.num_users}, {dataset.num_items + 1}) or ({dataset.num_users}, {dataset.num_items})")
    pad = scores.shape[1] == dataset.num_items
    ranks = np.empty(dataset.num_users, dtype=np.int32)
    for start in range(0, dataset.num_users, batch_size):
        chunk = torch.from_numpy(np.array(scores[start : start + batch_size], dtype=np.float32))  # a writable copy
        if pad:
            chunk = torch.nn.functional.pad(chunk, (1, 0), value=-torch.inf)
        rows = torch.from_numpy(targets[start : start + batch_size])
        ranks[start : start + len(rows)] = ranks_from_scores(chunk, rows).numpy()
    return ranks


def import_results(path: Path | str, dataset_name: str, label: str, runs_dir: Path | str = "runs", max_history: int = 50) -> RunRecord:
    """Evaluate another tool's output file and store it as a finished run named ``label``."""
    from recbench.download import sha256_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    dataset = load_dataset(dataset_name)
    _, _, targets = dataset.eval_examples("test", max_history)
    if path.suffix == ".npy":
        ranks, kind = ranks_from_score_matrix(path, dataset, targets), "score matrix"
    else:
        ranks, kind = ranks_from_lists(path, dataset, targets), "ranked lists"
    checksum = sha256_file(path)
    identity = {"method": label, "dataset": dataset.name, "fingerprint": dataset.fingerprint, "seed": 0, "imported": checksum}
    run = RunRecord.for_experiment(Path(runs_dir), dataset.name, label, 0, identity)
    run.write_config({**identity, "config": {}, "imported_from": str(path.resolve()), "imported_format": kind})
    protocol = {
        "split": "test", "candidates": "all items", "num_candidates": dataset.num_items, "num_users": dataset.num_users,
        "mask_history": False, "ties": TIE_POLICY, "max_history": max_history,
    }
    run.finish(None, EvalResult("test", ranks, metrics_from_ranks(ranks), protocol), extra={"imported": kind})
    return run
