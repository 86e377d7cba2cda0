"""The Evaluator: ranks and metrics against brute-force loops (docs/protocol.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recbench.method import Batch, DataSpec, Method, MethodConfig
from recbench.runs.evaluate import Evaluator, ranks_from_scores
from recbench.runs.metrics import metrics_from_ranks


def brute_force_rank(scores: np.ndarray, target: int, history: set[int] | None = None) -> int:
    """1 + number of other candidate items (1..N, not history unless the target) scoring >= target."""
    rank = 1
    for item in range(1, len(scores)):
        if item == target or (history and item in history):
            continue
        if scores[item] >= scores[target]:
            rank += 1
    return rank


@pytest.mark.parametrize("levels", [None, 3])  # continuous scores, then heavily tied ones
def test_ranks_match_a_brute_force_loop(levels: int | None) -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(64, 41)).astype(np.float32)
    if levels:
        scores = np.floor(scores * levels / 2).astype(np.float32)
    targets = rng.integers(1, 41, size=64)
    ranks = ranks_from_scores(torch.from_numpy(scores.copy()), torch.from_numpy(targets))
    expected = [brute_force_rank(scores[b], targets[b]) for b in range(64)]
    assert ranks.tolist() == expected


def test_masked_history_removes_history_items_but_keeps_the_target() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(32, 21)).astype(np.float32)
    targets = rng.integers(1, 21, size=32)
    history = rng.integers(0, 21, size=(32, 6))
    history[:4, 0] = targets[:4]  # some targets are repeat purchases
    ranks = ranks_from_scores(torch.from_numpy(scores.copy()), torch.from_numpy(targets), torch.from_numpy(history))
    expected = [brute_force_rank(scores[b], targets[b], set(history[b].tolist()) - {0}) for b in range(32)]
    assert ranks.tolist() == expected


def test_constant_scores_get_the_worst_rank() -> None:
    ranks = ranks_from_scores(torch.zeros(3, 11), torch.tensor([1, 5, 10]))
    assert ranks.tolist() == [10, 10, 10]


def test_nan_scores_count_against_the_target() -> None:
    scores = torch.tensor([[0.0, 1.0, float("nan"), 0.5], [0.0, float("nan"), 2.0, 3.0]])
    assert ranks_from_scores(scores, torch.tensor([1, 1])).tolist() == [2, 3]


def test_padding_column_is_never_a_candidate() -> None:
    scores = torch.tensor([[100.0, 1.0, 0.0]])
    assert ranks_from_scores(scores, torch.tensor([1])).tolist() == [1]


def test_metrics_match_hand_computation() -> None:
    ranks = np.array([1, 2, 5, 11, 60])
    metrics = metrics_from_ranks(ranks, ks=(5, 10))
    assert metrics["hr@5"] == pytest.approx(3 / 5)
    assert metrics["hr@10"] == pytest.approx(3 / 5)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 5)
    assert metrics["mrr@5"] == pytest.approx((1 + 1 / 2 + 1 / 5) / 5)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 11 + 1 / 60) / 5)


class LookupScorer(Method):
    """Scores from a fixed (users x items) table, keyed by the first history item (= user id + 1)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__(MethodConfig(), DataSpec(num_items=table.shape[1] - 1, max_seq_length=50))
        self.table = table

    def loss(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - never trained
        raise AssertionError

    def score(self, batch: Batch) -> torch.Tensor:
        return self.table[batch.items[:, 0] - 1].clone()


def test_evaluator_ranks_every_user_in_dataset_order(toy_dataset) -> None:
    # A table indexed by user: reuse each user's first item as the key by building one row per user.
    rng = np.random.default_rng(2)
    histories, lengths, targets = toy_dataset.eval_examples("test", max_history=50)
    table = torch.from_numpy(rng.normal(size=(toy_dataset.num_items + 1, toy_dataset.num_items + 1)).astype(np.float32))
    result = Evaluator(toy_dataset, "test", max_history=50, batch_size=7).run(LookupScorer(table))
    expected = [brute_force_rank(table[histories[u, 0] - 1].numpy(), targets[u]) for u in range(toy_dataset.num_users)]
    assert result.ranks.tolist() == expected
    assert result.metrics == metrics_from_ranks(np.array(expected))
    assert result.protocol["mask_history"] is False and "pessimistic" in result.protocol["ties"]


def test_an_item_table_is_built_once_per_evaluation_pass(toy_dataset) -> None:
    class CountingTable(LookupScorer):
        builds = 0

        def score(self, batch: Batch) -> torch.Tensor:
            def build() -> torch.Tensor:
                CountingTable.builds += 1
                return self.table

            return self.once_per_pass("table", build)[batch.items[:, 0] - 1].clone()

    table = torch.randn(toy_dataset.num_items + 1, toy_dataset.num_items + 1)
    scorer = CountingTable(table)
    evaluator = Evaluator(toy_dataset, "test", max_history=50, batch_size=7)
    first = evaluator.run(scorer)
    assert len(evaluator.batches) > 1 and CountingTable.builds == 1
    table.mul_(-1)  # weights change between passes: the next pass must not reuse the old table
    second = evaluator.run(scorer)
    assert CountingTable.builds == 2 and first.ranks.tolist() != second.ranks.tolist()
