"""Metrics from per-user ranks, and the result of one evaluation (no torch needed).

HR@k, NDCG@k = 1/log2(rank + 1), MRR@k = 1/rank (0 beyond k), and MRR, averaged over users.
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
    cut-off) for 1-based ranks: the one place the formulas live (tables and tests average these)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    hit = ranks <= k if k is not None else np.ones(ranks.shape, dtype=bool)
    if name == "hr":
        return hit.astype(np.float64)
    if name not in ("ndcg", "mrr"):
        raise ValueError(f"unknown metric {name!r}")
    value = 1.0 / np.log2(ranks + 1.0) if name == "ndcg" else 1.0 / ranks
    return np.where(hit, value, 0.0)


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
    ranks: np.ndarray  # (U,) int32, user u's rank at position u
    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
