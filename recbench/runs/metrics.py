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


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@k, NDCG@k, MRR@k for each k, and MRR, from 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    metrics: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        metrics[f"hr@{k}"] = float(hit.mean())
        metrics[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
        metrics[f"mrr@{k}"] = float(np.where(hit, 1.0 / ranks, 0.0).mean())
    metrics["mrr"] = float((1.0 / ranks).mean())
    return metrics


@dataclass
class EvalResult:
    """Per-user ranks of one split, the metrics computed from them and the protocol used."""

    split: str
    ranks: np.ndarray  # (U,) int32, user u's rank at position u
    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
