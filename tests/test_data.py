"""The canonical Dataset: leave-one-out splits, training windows, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from recbench.data.dataset import build_dataset, load_dataset, save_dataset
from recbench.errors import DataError, UnknownNameError
from recbench.runs.batching import TrainingWindows
from tests.conftest import make_cyclic_dataset


def test_training_windows_never_target_the_valid_or_test_item() -> None:
    dataset = make_cyclic_dataset(users=40, min_len=3, max_len=30)
    windows = TrainingWindows(*dataset.train_sequences(), window=8)
    trained = {}  # (user, position in sequence) pairs used as targets
    train_offsets, _ = dataset.train_sequences()
    for batch in windows.batches(50, np.random.default_rng(0)):
        assert (batch.targets[batch.items == 0] == 0).all()
    # Map every window target back to its absolute position in the user's full sequence.
    user_of = np.searchsorted(train_offsets, windows.starts, side="right") - 1
    for start, length, user in zip(windows.starts, windows.lengths, user_of):
        for target_pos in range(start + 1, start + length + 1):
            trained[(user, target_pos - train_offsets[user])] = True
    for user in range(dataset.num_users):
        n = dataset.lengths[user]
        positions = {p for (u, p) in trained if u == user}
        assert positions == set(range(1, n - 2)), user  # every training item but the first, nothing after


def test_every_training_target_appears_exactly_once_per_epoch() -> None:
    dataset = make_cyclic_dataset(users=30, min_len=3, max_len=40)
    windows = TrainingWindows(*dataset.train_sequences(), window=10)
    batches = windows.batches(64, np.random.default_rng(1))
    assert sum(int((b.targets > 0).sum()) for b in batches) == int((dataset.lengths - 3).sum())
    assert max(int((b.targets > 0).sum()) for b in batches) <= 64


def test_eval_histories_are_the_last_items_before_the_target() -> None:
    dataset = make_cyclic_dataset(users=25, min_len=3, max_len=20)
    for split, shift in (("valid", 2), ("test", 1)):
        histories, lengths, targets = dataset.eval_examples(split, max_history=5)
        for user in range(dataset.num_users):
            sequence = dataset.sequence(user).tolist()
            end = len(sequence) - shift
            expected = sequence[max(0, end - 5) : end]
            assert histories[user, : lengths[user]].tolist() == expected
            assert (histories[user, lengths[user] :] == 0).all()
            assert targets[user] == sequence[end]


def test_test_history_ends_with_the_valid_target() -> None:
    dataset = make_cyclic_dataset()
    _, _, valid_targets = dataset.eval_examples("valid", 50)
    histories, lengths, _ = dataset.eval_examples("test", 50)
    assert (histories[np.arange(len(lengths)), lengths - 1] == valid_targets).all()


def test_build_drops_short_users_and_unused_items() -> None:
    dataset, report = build_dataset("d", ["a", "b", "c"], [[0, 1, 2], [3, 0], [2, 1, 0, 1]], ["x", "y", "z", "w"], None)
    assert dataset.num_users == 2 and dataset.num_items == 3
    assert report.dropped_short_users == 1 and report.dropped_unused_items == 1
    assert dataset.sequence(1).tolist() == [3, 2, 1, 2]


def test_build_rejects_a_dataset_empty_after_filtering() -> None:
    with pytest.raises(DataError, match="empty after filtering"):
        build_dataset("d", ["a"], [[0, 1]], ["x", "y"], None)


def test_save_and_load_round_trip(recbench_home) -> None:
    dataset = make_cyclic_dataset()
    save_dataset(dataset)
    loaded = load_dataset("toy")
    assert np.array_equal(loaded.items, dataset.items) and np.array_equal(loaded.offsets, dataset.offsets)
    assert loaded.item_texts == dataset.item_texts and loaded.user_ids == dataset.user_ids
    assert loaded.fingerprint == dataset.fingerprint


def test_loading_a_catalogued_but_missing_dataset_says_how_to_get_it(recbench_home) -> None:
    with pytest.raises(DataError, match="recbench download scientific"):
        load_dataset("scientific")


def test_loading_an_unknown_dataset_suggests_close_names(recbench_home) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: scientific"):
        load_dataset("scientifc")


def test_subsampled_users_keep_the_item_vocabulary() -> None:
    dataset = make_cyclic_dataset(users=50)
    subset = dataset.subsample_users(0.3, seed=0)
    assert subset.num_users == 15 and subset.num_items == dataset.num_items
    assert subset.fingerprint != dataset.fingerprint


@pytest.mark.parametrize("bucket_by_length", [True, False])
def test_batches_cover_every_target_once_within_the_size_limit(bucket_by_length: bool) -> None:
    dataset = make_cyclic_dataset(users=50, min_len=3, max_len=40)
    windows = TrainingWindows(*dataset.train_sequences(), window=10)
    batches = windows.batches(64, np.random.default_rng(3), bucket_by_length=bucket_by_length)
    pairs = sorted(
        (tuple(b.items[r, : b.lengths[r]].tolist()), tuple(b.targets[r, : b.lengths[r]].tolist()))
        for b in batches
        for r in range(b.size)
    )
    expected = sorted(
        (tuple(windows.items[s : s + n].tolist()), tuple(windows.items[s + 1 : s + n + 1].tolist()))
        for s, n in zip(windows.starts, windows.lengths)
    )
    assert pairs == expected
    assert all(int((b.targets > 0).sum()) <= 64 for b in batches)


def test_sample_rows_are_recboles_training_rows_shuffled_across_users() -> None:
    """``samples=True``: one row per training target, its input the (at most window) items before it,
    the target at the row's last position only; batches of exactly the requested number of samples
    (the last one smaller), rows of many users mixed in each, as RecBole's shuffled loader."""
    dataset = make_cyclic_dataset(users=30, min_len=3, max_len=40)
    window = 10
    samples = TrainingWindows(*dataset.train_sequences(), window=window, samples=True)
    batches = samples.batches(64, np.random.default_rng(4))
    rows = []
    for b in batches:
        for r in range(b.size):
            n = int(b.lengths[r])
            assert b.targets[r, : n - 1].eq(0).all() and (b.targets[r, n:] == 0).all()
            rows.append((int(b.users[r]), tuple(b.items[r, :n].tolist()), int(b.targets[r, n - 1])))
    expected = []  # brute force: every (prefix, target) of each user's training part, prefix cut to `window`
    for user in range(dataset.num_users):
        training = dataset.sequence(user).tolist()[:-2]
        for j in range(1, len(training)):
            expected.append((user + 1, tuple(training[max(0, j - window) : j]), training[j]))
    assert sorted(rows) == sorted(expected)
    assert samples.num_targets == len(expected) == int((dataset.lengths - 3).sum())
    sizes = sorted(b.size for b in batches)
    assert sizes[1:] == [64] * (len(batches) - 1) and 0 < sizes[0] <= 64
    assert min(len(set(b.users.tolist())) for b in batches if b.size == 64) > 10
