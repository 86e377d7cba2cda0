"""Evaluate results produced by other tools with recbench's one Evaluator protocol.

Two documented formats, for the dataset's leave-one-out ``test`` targets:

- ranked lists (``.tsv``, ``.csv``, ``.txt``): one line per user, ``user item1 item2 ...``
  separated by tabs, commas or spaces, using the dataset's raw user and item tokens (those of
  ``users.txt`` / ``items.jsonl``), best first; an optional first header line whose first field
  is ``user``, ``user_id`` or ``uid`` is skipped. The rank of the held-out item is its position in
  the list (repeated items count once, at their first position). A target missing from the list
  ties with every other unlisted item at the bottom, so its rank is N (pessimistic, as every tie
  in recbench). Hence metrics@k are exact for k up to the shortest list's length K and lower
  bounds beyond it; K is stored with the run (``metrics.json``: ``list_length``).
- a score matrix (``.npy``): shape (users, N + 1) with column i = item id i (column 0 ignored),
  or (users, N) with column j = item id j + 1; rows in the dataset's user order. Ranks follow
  from the scores exactly as for a recbench model (pessimistic ties, NaN counts against the
  target, padding excluded).

A file that cannot be a result is refused with :class:`DataError`: a directory, a ``.npz`` archive,
an empty ``.npy``, a complex or all-NaN score matrix, ranked lists that are all empty.

The result is stored as a finished run (method name = the given label, seed 0, no valid split),
so it appears in ``recbench leaderboard`` next to recbench's own runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from recbench.data.dataset import Dataset, load_dataset
from recbench.data.formats import read_lines
from recbench.errors import DataError, RunError
from recbench.names import check_name
from recbench.runs.evaluate import (
    full_histories,
    protocol_record,
    rank_array,
    ranks_from_candidate_scores,
    ranks_from_scores,
)
from recbench.runs.metrics import EvalResult, metrics_from_ranks
from recbench.runs.protocols import BUILTIN, DEFAULT_PROTOCOL, Protocol, negatives_for
from recbench.runs.record import RunRecord

_SEPARATOR = re.compile(r"[\t, ]+")
_HEADER_FIELDS = {"user", "user_id", "userid", "uid", "user:token", "user_id:token"}


def ranks_from_lists(path: Path, dataset: Dataset, targets: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-user ranks of ``targets`` (U,) in a ranked-list file, and the shortest list's length.

    See the module docstring for the format; a malformed line raises :class:`DataError` naming
    the file and line.
    """
    user_index = {token: u for u, token in enumerate(dataset.user_ids)}
    item_id = {token: i + 1 for i, token in enumerate(dataset.item_ids)}
    ranks = np.zeros(dataset.num_users, dtype=np.int32)
    shortest, longest = None, 0
    for number, line in read_lines(path):
        fields = [f for f in _SEPARATOR.split(line.strip()) if f]
        if not fields:
            continue
        user = user_index.get(fields[0])
        if user is None and number == 1 and fields[0].lower() in _HEADER_FIELDS:
            continue
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
        shortest = len(listed) if shortest is None else min(shortest, len(listed))
        # An unlisted target ties with all other unlisted items: pessimistic rank N.
        ranks[user] = listed.index(targets[user]) + 1 if targets[user] in listed else dataset.num_items
        longest = max(longest, len(listed))
    missing = int((ranks == 0).sum())
    if missing:
        first = dataset.user_ids[int(np.flatnonzero(ranks == 0)[0])]
        raise DataError(
            f"{path}: {missing} of {dataset.num_users} users have no line (e.g. user {first!r}); every user "
            "must be ranked"
        )
    if longest == 0:
        raise DataError(f"{path}: every ranked list is empty (users without items): nothing to evaluate")
    return ranks, int(shortest or 0)


def ranks_from_score_matrix(
    path: Path, dataset: Dataset, targets: np.ndarray, batch_size: int = 1024, protocol: Protocol | None = None
) -> np.ndarray:
    """Per-user ranks from a (users, N + 1) or (users, N) ``.npy`` score matrix under ``protocol``
    (default ``full``), in batches."""
    protocol = protocol or BUILTIN[DEFAULT_PROTOCOL]
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file, expected a .npy score matrix")
    try:
        scores = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise DataError(f"{path}: not a numeric .npy array ({err})") from None
    if not isinstance(scores, np.ndarray) or not np.issubdtype(scores.dtype, np.number):
        raise DataError(
            f"{path}: expected a numeric .npy score matrix, got {getattr(scores, 'dtype', type(scores).__name__)}"
        )
    if np.issubdtype(scores.dtype, np.complexfloating):
        raise DataError(f"{path}: complex scores ({scores.dtype}) cannot be ranked; give real-valued scores")
    if (
        scores.ndim != 2
        or scores.shape[0] != dataset.num_users
        or scores.shape[1] not in (dataset.num_items, dataset.num_items + 1)
    ):
        raise DataError(
            f"{path}: score matrix of shape {scores.shape}, expected ({dataset.num_users}, "
            f"{dataset.num_items + 1}) or ({dataset.num_users}, {dataset.num_items})"
        )
    pad = scores.shape[1] == dataset.num_items
    ranks = rank_array(dataset.num_users, protocol.ties)
    negatives = negatives_for(dataset, "test", protocol) if protocol.sampled else None
    scored = False
    for start in range(0, dataset.num_users, batch_size):  # never the whole matrix in float32 at once
        chunk = torch.from_numpy(np.array(scores[start : start + batch_size], dtype=np.float32))  # a writable copy
        columns = chunk if pad else chunk[:, 1:]  # column 0 of an (users, N + 1) matrix is padding
        scored = scored or not bool(torch.isnan(columns).all())
        if pad:
            chunk = torch.nn.functional.pad(chunk, (1, 0), value=-torch.inf)
        rows = torch.from_numpy(targets[start : start + batch_size])
        users = np.arange(start, start + len(rows))
        if negatives is not None:
            candidates = torch.from_numpy(np.concatenate([targets[users, None], negatives[users]], axis=1))
            batch_ranks = ranks_from_candidate_scores(chunk.gather(1, candidates.long()), protocol.ties)
        else:
            history = torch.from_numpy(full_histories(dataset, "test", users)) if protocol.mask_history else None
            batch_ranks = ranks_from_scores(chunk, rows, history, protocol.ties)
        ranks[start : start + len(rows)] = batch_ranks.numpy()
    if not scored:
        raise DataError(f"{path}: every score is NaN: nothing to rank")
    return ranks


def check_import_file(path: Path) -> None:
    """Refuse, in one line, a path that cannot hold results: missing, a directory, an archive, empty."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(6)
    if path.suffix.lower() == ".npz" or head[:4] == b"PK\x03\x04":
        raise DataError(
            f"{path}: a .npz archive is not a supported import: "
            "give ranked lists (.tsv/.csv/.txt) or a score matrix (.npy)"
        )
    if path.suffix.lower() != ".npy" and head == b"\x93NUMPY":
        raise DataError(f"{path}: a .npy array under another name; name it *.npy to import it as a score matrix")
    if not head:
        kind = "a .npy score matrix" if path.suffix.lower() == ".npy" else "ranked lists"
        raise DataError(f"{path}: empty file, expected {kind}")


def check_label(label: str) -> None:
    """An imported run needs a name of its own: a safe directory name that no method has."""
    from recbench.registry import method_names

    check_name("label (--name)", label)
    if label.lower() in method_names():
        raise DataError(
            f"--name {label!r} is a registered recbench method; label other tools' results differently (e.g. "
            f"{label}-external)"
        )


def import_results(
    path: Path | str, dataset_name: str, label: str, runs_dir: Path | str = "runs", max_history: int = 50
) -> RunRecord:
    """Evaluate another tool's output file and store it as a finished run named ``label``.

    Importing the same file again returns the stored run; a different file under a label that
    already has a run on this dataset is an error (a leaderboard row is one set of results).
    """
    from recbench.data.download import sha256_file

    path = Path(path)
    check_import_file(path)
    check_label(label)
    dataset = load_dataset(dataset_name)
    checksum = sha256_file(path)
    identity = {
        "method": label,
        "dataset": dataset.name,
        "fingerprint": dataset.fingerprint,
        "seed": 0,
        "imported": checksum,
    }
    run = RunRecord.for_experiment(Path(runs_dir), dataset.name, label, 0, identity)
    if run.is_finished:
        return run
    others = sorted(p.parent for p in (Path(runs_dir) / dataset.name / label).glob("seed0-*/status.json"))
    if others:
        raise RunError(
            f"{others[0]} already holds results labelled '{label}' on {dataset.name} (from another file); "
            "remove it or choose another --name"
        )
    _, _, targets = dataset.eval_examples("test", max_history)
    extra: dict[str, object] = {}
    if path.suffix.lower() == ".npy":
        ranks, kind = ranks_from_score_matrix(path, dataset, targets), "score matrix"
    else:
        ranks, shortest = ranks_from_lists(path, dataset, targets)
        kind, extra["list_length"] = "ranked lists", shortest
    run.write_config({**identity, "config": {}, "imported_from": str(path.resolve()), "imported_format": kind})
    protocol = protocol_record(dataset, "test", BUILTIN[DEFAULT_PROTOCOL], max_history, None)
    run.finish(None, EvalResult("test", ranks, metrics_from_ranks(ranks), protocol), extra={"imported": kind, **extra})
    return run


def evaluate_imported(run: RunRecord, dataset: Dataset, protocol: Protocol) -> EvalResult:
    """The test result of an imported score matrix under another protocol, from the file it was
    imported from (which must still hold the same bytes). Ranked lists give positions, not scores:
    only the full, history-kept, pessimistic protocol can be read from them."""
    from recbench.data.download import sha256_file

    record = run.config
    if record.get("imported_format") != "score matrix":
        if protocol.definition() == BUILTIN[DEFAULT_PROTOCOL].definition():
            return EvalResult("test", run.ranks("test"), run.metrics["test"], run.metrics["protocol"])
        raise RunError(
            f"run {run.path} holds ranked lists: the rank of a target among sampled or masked candidates, or with "
            f"split ties, cannot be read from a list of positions; protocol '{protocol.name}' needs a score matrix"
        )
    source = Path(record.get("imported_from", ""))
    if not source.is_file():
        raise RunError(f"run {run.path} was imported from {source}, which is gone; import the score matrix again")
    if sha256_file(source) != record.get("imported"):
        raise RunError(f"{source} changed since it was imported into {run.path} (sha256 differs); import it again")
    max_history = int((run.metrics.get("protocol") or {}).get("max_history", 50))
    _, _, targets = dataset.eval_examples("test", max_history)
    ranks = ranks_from_score_matrix(source, dataset, targets, protocol=protocol)
    negatives = negatives_for(dataset, "test", protocol) if protocol.sampled else None
    return EvalResult(
        "test",
        ranks,
        metrics_from_ranks(ranks, protocol.ks),
        protocol_record(dataset, "test", protocol, max_history, negatives),
    )


def import_note(run: RunRecord) -> str | None:
    """What a reader of an imported run's metrics must know, or None."""
    length = run.metrics.get("list_length")
    if length is None or length >= run.metrics["protocol"]["num_candidates"]:
        return None
    return (
        f"ranked lists of at least {length} items: metrics@k are exact for k <= {length}, "
        "lower bounds beyond (an unlisted target gets rank N)"
    )
