"""The random tie policy: each metric is its mean over every order of the tied items (what a tool that
breaks ties arbitrarily gives on average), checked against an enumeration of those orders."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from recbench.runs.evaluate import ranks_from_candidate_scores, ranks_from_scores
from recbench.runs.metrics import metrics_from_ranks, per_user_values
from recbench.runs.protocols import get_protocol
from recbench.runs.record import rank_problem

KS = (1, 2, 3, 5, 10)


def metric_at(rank: int, name: str, k: int | None) -> float:
    """The textbook value at one rank, written out apart from recbench's formulas."""
    if k is not None and rank > k:
        return 0.0
    return {"hr": 1.0, "ndcg": 1.0 / math.log2(rank + 1), "mrr": 1.0 / rank}[name]


def mean_over_orders(scores: list[float], target: int, name: str, k: int | None) -> float:
    """Enumerate every order of the items tied with the target; the target's rank in each order."""
    higher = sum(1 for i, s in enumerate(scores) if i != target and s > scores[target])
    tied = [i for i, s in enumerate(scores) if s == scores[target]]  # the target included
    values = [metric_at(1 + higher + order.index(target), name, k) for order in itertools.permutations(tied)]
    return sum(values) / len(values)


def test_metrics_under_random_ties_are_the_mean_over_every_order_of_the_tied_items() -> None:
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 4, size=(60, 9)).astype(np.float32)  # 8 candidates (column 0 is padding)
    targets = rng.integers(1, 9, size=60)
    bounds = ranks_from_scores(torch.from_numpy(scores), torch.from_numpy(targets), ties="random").numpy()
    for name in ("hr", "ndcg", "mrr"):
        for k in (*KS, None):
            got = per_user_values(bounds, name, k)
            want = [mean_over_orders(list(scores[u, 1:]), targets[u] - 1, name, k) for u in range(60)]
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"{name}@{k}")


def test_random_ties_lie_between_pessimistic_and_optimistic_and_differ_from_the_metric_at_the_mean_rank() -> None:
    rng = np.random.default_rng(2)
    scores = torch.from_numpy(np.floor(rng.normal(size=(200, 41)))).float()
    targets = torch.from_numpy(rng.integers(1, 41, size=200))
    pessimistic = ranks_from_scores(scores, targets).numpy()
    bounds = ranks_from_scores(scores, targets, ties="random").numpy()
    expected = ranks_from_scores(scores, targets, ties="expected").numpy()
    assert (bounds[:, 1] == pessimistic).all() and (bounds[:, 0] <= pessimistic).all()
    np.testing.assert_array_equal(bounds.mean(axis=1), expected)  # the mean rank is the expected policy's
    worst, best, shuffled = (metrics_from_ranks(r) for r in (pessimistic, bounds[:, 0], bounds))
    for metric in ("hr@10", "ndcg@10", "mrr"):
        assert worst[metric] <= shuffled[metric] <= best[metric]
    # NDCG is convex in the rank: its mean over the orders is not its value at the mean rank
    assert metrics_from_ranks(bounds)["ndcg@10"] != pytest.approx(metrics_from_ranks(expected)["ndcg@10"], abs=1e-4)


def test_without_ties_random_equals_pessimistic() -> None:
    rng = np.random.default_rng(4)
    scores = torch.from_numpy(rng.normal(size=(50, 30))).float()
    targets = torch.from_numpy(rng.integers(1, 30, size=50))
    bounds = ranks_from_scores(scores, targets, ties="random").numpy()
    assert (bounds[:, 0] == bounds[:, 1]).all()
    assert metrics_from_ranks(bounds) == metrics_from_ranks(bounds[:, 0])


def test_a_sampled_protocol_with_random_ties_gives_bounds_among_its_candidates() -> None:
    scores = torch.tensor([[2.0, 2.0, 2.0, 1.0], [1.0, 3.0, 1.0, 0.0], [float("nan"), 1.0, 1.0, 1.0]])
    assert ranks_from_candidate_scores(scores, "random").tolist() == [[1, 3], [2, 3], [4, 4]]


def test_stored_random_ranks_are_checked_as_best_worst_pairs() -> None:
    good = np.array([[1, 3], [2, 2]], dtype=np.int32)
    assert rank_problem(good, 2, 5, "random") is None
    assert "best rank after its worst" in rank_problem(np.array([[3, 1]], dtype=np.int32), 1, 5, "random")
    assert "pairs" in rank_problem(np.array([1, 2], dtype=np.int32), 2, 5, "random")
    assert "more than the 5 candidates" in rank_problem(np.array([[1, 6]], dtype=np.int32), 1, 5, "random")
    assert "integers" in rank_problem(good, 2, 5)  # a pair is not a pessimistic rank


def test_the_full_random_protocol_is_built_in() -> None:
    protocol = get_protocol("full-random")
    assert protocol.ties == "random" and not protocol.sampled and not protocol.mask_history
    assert protocol.tie_policy().startswith("random")


def test_the_rank_cdf_of_random_ties_is_the_leaderboards_hit_rate() -> None:
    from recbench.results.plots import rank_cdf_points
    from recbench.results.report import RunResult
    from recbench.results.stats import per_user_metric

    rng = np.random.default_rng(8)
    best = rng.integers(1, 30, size=(2, 40))
    runs = [
        RunResult("d", "m", seed, np.stack([b, b + rng.integers(0, 4, size=40)], axis=1), {"num_candidates": 40})
        for seed, b in enumerate(best)
    ]
    points = rank_cdf_points(runs, "d", [1, 5, 10, 33])["m"]
    for k, share in zip(points.ks, points.share, strict=True):
        assert share == pytest.approx(np.mean([per_user_metric(r.ranks, f"hr@{k}").mean() for r in runs]))
