"""Paired, per-user statistics between methods on one dataset (docs/protocol.md).

Every comparison works on per-user metric values (user u at row u), recomputed from the stored
ranks, so any metric and any test can be added after the fact:

- tests: paired t-test and Wilcoxon signed-rank (``scipy.stats``), and a paired randomisation
  test (random sign flips of the per-user differences, p = (c + 1) / (n + 1));
- a percentile bootstrap confidence interval of the mean difference (users resampled);
- effect sizes: mean difference, relative difference in %, Cohen's d_z (mean / sd of differences);
- corrections over the comparisons of one table: Holm, Bonferroni, Benjamini–Hochberg;
- several seeds: mean ± sample std of the seed-level means, tests on per-user values averaged
  over seeds.

The array functions accept one vector of differences (n,) or a matrix (n, C) holding C
comparisons in columns; columns share the random draws, which keeps a whole table's worth of
comparisons to one pass over the users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

from recbench.errors import RecbenchError
from recbench.runs.metrics import per_user_values

TESTS = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test", "permutation": "paired randomisation test"}
CORRECTIONS = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg", "none": "no correction"}
DEFAULT_PERMUTATIONS = 10_000
DEFAULT_RESAMPLES = 1_000
MAX_EXACT_USERS = 20  # 2**20 sign vectors: exact enumeration stays well under a second
_CHUNK_ELEMENTS = 4_000_000  # random draws materialised at once (32 MB as float64)
_ZERO = 1e-12  # differences this small are float noise from averaging seeds in another order


# --- per-user metrics -------------------------------------------------------------------------
def parse_metric(metric: str) -> tuple[str, int | None]:
    """'ndcg@10' -> ('ndcg', 10); 'recall@k' is 'hr@k' (one held-out item); 'mrr' -> ('mrr', None)."""
    name, _, cutoff = metric.strip().lower().partition("@")
    name = "hr" if name == "recall" else name
    if name == "mrr" and not cutoff:
        return name, None
    if name in {"hr", "ndcg", "mrr"} and cutoff.isdigit() and int(cutoff) > 0:
        return name, int(cutoff)
    raise RecbenchError(
        f"unknown metric '{metric}'; expected hr@K, recall@K, ndcg@K, mrr@K or mrr (K a positive integer)"
    )


def per_user_metric(ranks: np.ndarray, metric: str) -> np.ndarray:
    """(U,) 1-based ranks -> (U,) float64 values of ``metric`` per user (their mean is the metric)."""
    return per_user_values(ranks, *parse_metric(metric))


@dataclass(frozen=True)
class SeedSummary:
    """One method's metric over several seeds."""

    mean: float  # mean of the seed-level means
    std: float  # sample std (ddof=1) of the seed-level means; NaN with one seed
    n_seeds: int
    per_user: np.ndarray  # (U,) per-user values averaged over seeds: what the tests compare


def across_seeds(per_seed: Sequence[np.ndarray]) -> SeedSummary:
    """Summarise per-user values of one method, one array (U,) per seed."""
    values = np.stack([np.asarray(v, dtype=np.float64) for v in per_seed])  # (S, U)
    seed_means = values.mean(axis=1)
    std = float(seed_means.std(ddof=1)) if len(seed_means) > 1 else float("nan")
    return SeedSummary(float(seed_means.mean()), std, len(seed_means), values.mean(axis=0))


# --- tests ------------------------------------------------------------------------------------
def _columns(diffs: np.ndarray) -> np.ndarray:
    d = np.asarray(diffs, dtype=np.float64)
    d = d[:, None] if d.ndim == 1 else d
    if d.ndim != 2 or d.shape[0] < 2:
        raise RecbenchError(
            f"paired tests need per-user differences of shape (users >= 2, comparisons), got {np.shape(diffs)}"
        )
    return d


def _like_input(values: np.ndarray, diffs: np.ndarray) -> np.ndarray | float:
    return float(values[0]) if np.ndim(diffs) == 1 else values


def _require_positive(count: int, what: str) -> None:
    if count < 1:
        raise RecbenchError(f"the number of {what} must be at least 1, got {count}")


def paired_differences(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a - b per user, with float noise (|x| < 1e-12) set to exactly 0 so ties stay ties."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d[np.abs(d) < _ZERO] = 0.0
    return d


def t_test(diffs: np.ndarray) -> np.ndarray | float:
    """Two-sided paired t-test p-value(s); p = 1 where every difference is 0."""
    d = _columns(diffs)
    all_zero = ~d.any(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = scipy.stats.ttest_1samp(d, 0.0, axis=0).pvalue  # paired t-test = one-sample test of a - b
    return _like_input(np.where(all_zero, 1.0, p), diffs)


def wilcoxon_test(diffs: np.ndarray) -> np.ndarray | float:
    """Two-sided Wilcoxon signed-rank p-value(s) (scipy defaults: zero differences dropped)."""
    d = _columns(diffs)
    # One call per column: scipy's 2-D path is slower than a loop at this size.
    p = np.array([scipy.stats.wilcoxon(column).pvalue if column.any() else 1.0 for column in d.T])
    return _like_input(p, diffs)


def permutation_test(
    diffs: np.ndarray, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0, exact: bool = False
) -> np.ndarray | float:
    """Two-sided paired randomisation test of the mean difference.

    Under the null hypothesis each user's two values are exchangeable, so the sign of each
    difference is a fair coin. Monte Carlo: p = (c + 1) / (n + 1), c = number of random sign
    flips with |sum| >= the observed |sum|. ``exact=True`` enumerates all 2**k flips of the k
    non-zero differences instead (k <= 20) and returns c / 2**k.
    """
    d = _columns(diffs)
    _require_positive(n_permutations, "permutations")
    if exact:
        return _like_input(np.array([_exact_sign_flip(column) for column in d.T]), diffs)
    d = d[d.any(axis=1)]  # users with no difference anywhere cannot change any sum
    n_users, n_columns = d.shape
    if n_users == 0:
        return _like_input(np.ones(n_columns), diffs)
    total = d.sum(axis=0)
    threshold = np.abs(total) - 1e-9 * np.abs(d).sum(axis=0)  # matmul and sum round differently
    rng = np.random.default_rng(seed)
    count = np.zeros(n_columns)
    chunk = max(1, _CHUNK_ELEMENTS // n_users)
    for start in range(0, n_permutations, chunk):
        rows = min(chunk, n_permutations - start)
        random_bytes = rng.integers(0, 256, size=(rows, (n_users + 7) // 8), dtype=np.uint8)
        flipped = np.unpackbits(random_bytes, axis=1, count=n_users).astype(np.float64)  # (rows, U) 0/1
        permuted = total - 2.0 * (flipped @ d)  # flipping user u's sign subtracts 2 d_u
        count += (np.abs(permuted) >= threshold).sum(axis=0)
    return _like_input((count + 1.0) / (n_permutations + 1.0), diffs)


def _exact_sign_flip(column: np.ndarray) -> float:
    values = column[column != 0]
    if len(values) > MAX_EXACT_USERS:
        raise RecbenchError(
            "an exact permutation test enumerates 2**k sign flips; "
            f"k = {len(values)} non-zero differences is more than {MAX_EXACT_USERS}"
        )
    flipped = (np.arange(2 ** len(values))[:, None] >> np.arange(len(values))) & 1  # (2**k, k)
    permuted = values.sum() - 2.0 * (flipped @ values)
    threshold = abs(values.sum()) - 1e-9 * np.abs(values).sum()
    return float((np.abs(permuted) >= threshold).mean())


def p_values(
    diffs: np.ndarray, test: str = "t", n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0
) -> np.ndarray | float:
    """p-value(s) of ``test`` ('t', 'wilcoxon' or 'permutation') on per-user differences."""
    if test == "t":
        return t_test(diffs)
    if test == "wilcoxon":
        return wilcoxon_test(diffs)
    if test == "permutation":
        return permutation_test(diffs, n_permutations, seed)
    raise RecbenchError(f"unknown test '{test}'; expected one of: {', '.join(TESTS)}")


def bootstrap_ci(
    diffs: np.ndarray, n_resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Percentile bootstrap CI of the mean difference, resampling users with replacement.

    A resample is drawn as per-user counts and applied to every column by one matrix product:
    the same resampled user sets serve all comparisons, which is what makes a table cheap
    (``scipy.stats.bootstrap`` would gather every column's resamples separately).
    """
    d = _columns(diffs)
    _require_positive(n_resamples, "bootstrap resamples")
    n_users = len(d)
    active = d[d.any(axis=1)]  # users with a difference somewhere; the others add 0 to every sum
    n_active = len(active)
    rng = np.random.default_rng(seed)
    means = np.zeros((n_resamples, d.shape[1]))
    chunk = max(1, _CHUNK_ELEMENTS // max(n_active, 1))
    for start in range(0 if n_active else n_resamples, n_resamples, chunk):
        rows = min(chunk, n_resamples - start)
        # Of a resample's n draws, Binomial(n, k/n) land on the k active users, uniformly among them:
        # the same distribution as drawing all n, at k/n of the cost.
        landed = rng.binomial(n_users, n_active / n_users, size=rows)
        draws = np.repeat(n_active * np.arange(rows), landed) + rng.integers(0, n_active, size=landed.sum())
        counts = np.bincount(draws, minlength=rows * n_active).reshape(rows, n_active)
        means[start : start + rows] = counts.astype(np.float64) @ active / n_users
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return _like_input(low, diffs), _like_input(high, diffs)


# --- corrections ------------------------------------------------------------------------------
def adjust(p: Sequence[float] | np.ndarray, correction: str = "holm") -> np.ndarray:
    """Adjusted p-values for one family of comparisons (reject where adjusted p < alpha)."""
    p = np.asarray(p, dtype=np.float64)
    if correction == "none" or len(p) == 0:
        return p.copy()
    if correction == "bonferroni":
        return np.minimum(1.0, p * len(p))
    if correction == "bh":
        return scipy.stats.false_discovery_control(p, method="bh")
    if correction == "holm":
        # Step-down: the i-th smallest p (0-based) is multiplied by (m - i), then made monotone.
        order = np.argsort(p, kind="stable")
        scaled = (len(p) - np.arange(len(p))) * p[order]
        adjusted = np.empty_like(p)
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
        return adjusted
    raise RecbenchError(f"unknown correction '{correction}'; expected one of: {', '.join(CORRECTIONS)}")


# --- one comparison ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedStats:
    """Method vs other on one metric over the same users (differences are method - other)."""

    n_users: int
    mean: float
    other_mean: float
    mean_diff: float
    relative_pct: float  # 100 * mean_diff / other_mean (NaN if other_mean is 0)
    effect_dz: float  # Cohen's d_z = mean_diff / sd(differences) (NaN if sd is 0)
    ci_low: float
    ci_high: float
    p_value: float  # unadjusted
    wins: int  # users where method > other
    ties: int
    losses: int


def paired_stats(
    a: np.ndarray,
    b: np.ndarray,
    test: str = "t",
    n_permutations: int = DEFAULT_PERMUTATIONS,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[PairedStats]:
    """Compare per-user values ``a`` with ``b``, column by column: (U,) or (U, C) each."""
    a2, b2 = _columns(a), _columns(b)
    if a2.shape != b2.shape:
        raise RecbenchError(f"paired comparison needs the same users on both sides, got {a2.shape} and {b2.shape}")
    d = paired_differences(a2, b2)
    p = np.atleast_1d(p_values(d, test, n_permutations, seed))
    low, high = (np.atleast_1d(x) for x in bootstrap_ci(d, n_resamples, confidence, seed))
    mean_a, mean_b, mean_d = a2.mean(axis=0), b2.mean(axis=0), d.mean(axis=0)
    sd = d.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(mean_b != 0, 100.0 * mean_d / mean_b, np.nan)
        dz = np.where(sd > 0, mean_d / sd, np.nan)
    wins, ties, losses = (d > 0).sum(axis=0), (d == 0).sum(axis=0), (d < 0).sum(axis=0)
    return [
        PairedStats(
            len(d),
            float(mean_a[j]),
            float(mean_b[j]),
            float(mean_d[j]),
            float(relative[j]),
            float(dz[j]),
            float(low[j]),
            float(high[j]),
            float(p[j]),
            int(wins[j]),
            int(ties[j]),
            int(losses[j]),
        )
        for j in range(d.shape[1])
    ]


def comparison_pairs(methods: Sequence[str], baseline: str | None = None) -> list[tuple[str, str]]:
    """(method, other) pairs: each method vs ``baseline``, or all pairs in the given order."""
    if baseline is not None:
        return [(m, baseline) for m in methods if m != baseline]
    return [(m, other) for i, m in enumerate(methods) for other in methods[i + 1 :]]
