"""Metrics from per-user ranks, and the result of one evaluation (no torch needed).

HR@k, NDCG@k = 1/log2(rank + 1), MRR@k = 1/rank (0 beyond k), and MRR, averaged over users
(under random ties, each user's value is first averaged over the ranks the tied items allow).
Everything a leaderboard needs is recomputed from stored ranks with these functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_KS = (5, 10, 20, 50)
TIE_POLICY = "pessimistic (rank = 1 + #higher + #tied; NaN counts as higher)"


def per_user_values(ranks: np.ndarray, name: str, k: int | None) -> np.ndarray:
    """(U,) float64 values of metric ``name`` ("hr", "ndcg" or "mrr") at cut-off ``k`` (None: no
    cut-off) for 1-based ranks: the one place the formulas live (tables and tests average these).

    ``ranks`` may also be (U, 2) integer [best, worst] bounds (the ``random`` tie policy): each
    user's value is then the metric's mean over the ranks best..worst, all equally likely, i.e. its
    expectation when the tied items are put in a uniformly random order."""
    if np.ndim(ranks) == 2:
        return _mean_over_tie_orders(np.asarray(ranks, dtype=np.int64), name, k)
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= k if k is not None else np.ones(ranks.shape, dtype=bool)
    if name == "hr":
        return hit.astype(np.float64)
    if name not in ("ndcg", "mrr"):
        raise ValueError(f"unknown metric {name!r}")
    value = 1.0 / np.log2(ranks + 1.0) if name == "ndcg" else 1.0 / ranks
    return np.where(hit, value, 0.0)


def _mean_over_tie_orders(bounds: np.ndarray, name: str, k: int | None) -> np.ndarray:
    """(U, 2) [best, worst] ranks -> (U,) mean of the metric over the ranks best..worst, from prefix
    sums of its per-rank values (a per-user sum over up to N ranks, without a loop)."""
    if len(bounds) == 0:
        return np.zeros(0)
    best, worst = bounds[:, 0], bounds[:, 1]
    at_rank = per_user_values(np.arange(1, int(worst.max()) + 1), name, None)  # value at ranks 1..max
    prefix = np.concatenate([[0.0], np.cumsum(at_rank)])
    last = worst if k is None else np.minimum(worst, k)  # ranks past the cut-off are worth 0
    mean = (prefix[np.maximum(last, best - 1)] - prefix[best - 1]) / (worst - best + 1)
    # untied users: the value at their rank itself, so a run without ties equals its pessimistic self exactly
    return np.where(best == worst, per_user_values(best, name, k), mean)


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@k, NDCG@k, MRR@k for each k, and MRR, from 1-based ranks."""
    metrics: dict[str, float] = {}
    for k in ks:
        for name in ("hr", "ndcg", "mrr"):
            metrics[f"{name}@{k}"] = float(per_user_values(ranks, name, k).mean())
    metrics["mrr"] = float(per_user_values(ranks, "mrr", None).mean())
    return metrics


@dataclass
class EvalResult:
    """Per-user ranks of one split, the metrics computed from them and the protocol used."""

    split: str
    ranks: np.ndarray  # (U,) user u's rank at position u; (U, 2) [best, worst] under random ties
    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
