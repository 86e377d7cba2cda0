"""Training batches: every prefix of a sequence in one pass, bucketed by length.

A user's training part ``T`` (all but the last two items) yields inputs ``T[:-1]`` and next-item
targets ``T[1:]``. Sequences longer than the model's window are cut into consecutive windows
ending at the last target. Windows are sorted by length so a batch pads little, and batches are
sized by their number of target positions (RecBole's 2048 counts (prefix, target) samples). Each
window carries its user's id (``Batch.users``: dataset user ``u`` is id ``u + 1``).

With ``samples=True`` each row is instead one (prefix, target) sample, as RecBole's training
loader builds them: the target ``T[j]`` after the (at most ``window``) items before it, with only
that last position carrying a target. Such rows are packed in random order, a fixed number of
samples a batch, so a batch mixes samples of many users as RecBole's shuffled loader does.
"""

from __future__ import annotations

import numpy as np
import torch

from recbench.method import Batch


class TrainingWindows:
    """Start offsets and lengths of all training windows (or, with ``samples``, all single-sample
    rows) of a dataset's training sequences."""

    def __init__(self, offsets: np.ndarray, items: np.ndarray, window: int, samples: bool = False) -> None:
        self.items = np.asarray(items, dtype=np.int64)
        self.samples = samples
        lengths = np.diff(offsets)
        targets = np.maximum(lengths - 1, 0)
        if samples:  # one row per target T[j], j = 1 .. n - 1: input positions [max(0, j - window), j)
            user = np.repeat(np.arange(len(lengths)), targets)
            end = np.arange(targets.sum()) - np.repeat(np.cumsum(targets) - targets, targets) + 1
        else:
            per_user = -(-targets // window)  # ceil division; 0 for users with one training item
            user = np.repeat(np.arange(len(lengths)), per_user)
            # j-th window from the end of each user: input positions [max(0, b - window), b)
            j = np.arange(per_user.sum()) - np.repeat(np.cumsum(per_user) - per_user, per_user)
            end = targets[user] - j * window
        begin = np.maximum(0, end - window)
        self.starts = offsets[:-1][user] + begin
        self.lengths = end - begin
        self.users = user.astype(np.int64) + 1  # Batch.users ids: 0 is kept for the unknown user
        self.window = window

    @property
    def num_targets(self) -> int:
        return int(self.targets_per_row.sum())

    @property
    def targets_per_row(self) -> np.ndarray:
        """How many target positions each row carries: its length, or 1 for a sample row."""
        return np.ones_like(self.lengths) if self.samples else self.lengths

    def batches(self, targets_per_batch: int, rng: np.random.Generator, bucket_by_length: bool = True) -> list[Batch]:
        """One epoch of batches holding at most ``targets_per_batch`` targets each, in random order.

        With ``bucket_by_length``, windows of equal length are packed together (no padding); the
        few left over per length are packed in length order. Without it, windows are packed in a
        random order, as RecBole's shuffled batches (more padding, lengths mixed in each batch).
        Sample rows are always packed in random order (``bucket_by_length`` is ignored).
        """
        order = rng.permutation(len(self.lengths))
        if not bucket_by_length or self.samples:
            groups = self._pack(order, targets_per_batch)
            return [self._batch(groups[i]) for i in rng.permutation(len(groups))]
        order = order[np.argsort(self.lengths[order], kind="stable")]
        sorted_lengths = self.lengths[order]
        groups = []
        leftovers: list[np.ndarray] = []
        for length in np.unique(sorted_lengths):  # at most `window` distinct lengths
            same = order[
                np.searchsorted(sorted_lengths, length) : np.searchsorted(sorted_lengths, length, side="right")
            ]
            per_batch = max(1, targets_per_batch // int(length))
            full = len(same) // per_batch * per_batch
            groups.extend(np.split(same[:full], full // per_batch) if full else [])
            leftovers.append(same[full:])
        groups.extend(self._pack(np.concatenate(leftovers), targets_per_batch))
        return [self._batch(groups[i]) for i in rng.permutation(len(groups))]

    def _pack(self, rows: np.ndarray, targets_per_batch: int) -> list[np.ndarray]:
        """Greedily cut ``rows`` (in the given order) into groups of at most ``targets_per_batch`` targets."""
        groups: list[np.ndarray] = []
        start, filled = 0, 0
        for position, count in enumerate(self.targets_per_row[rows].tolist()):
            if position > start and filled + count > targets_per_batch:
                groups.append(rows[start:position])
                start, filled = position, 0
            filled += count
        if start < len(rows):
            groups.append(rows[start:])
        return groups

    def _batch(self, rows: np.ndarray) -> Batch:
        lengths = self.lengths[rows]
        width = int(lengths.max())
        columns = np.arange(width)
        index = np.minimum(self.starts[rows][:, None] + columns[None, :], len(self.items) - 2)
        real = columns[None, :] < lengths[:, None]
        inputs = np.where(real, self.items[index], 0)
        with_target = columns[None, :] == lengths[:, None] - 1 if self.samples else real
        targets = np.where(with_target, self.items[index + 1], 0)
        return Batch(
            items=torch.from_numpy(inputs),
            lengths=torch.from_numpy(lengths),
            targets=torch.from_numpy(targets),
            users=torch.from_numpy(self.users[rows]),
        )
