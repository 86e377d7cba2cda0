"""Statistics (docs/protocol.md): every test against scipy, the permutation test against enumeration,
corrections against hand-computed examples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats

from recbench.errors import RecbenchError
from recbench.results.stats import (
    across_seeds,
    adjust,
    bootstrap_ci,
    comparison_pairs,
    paired_differences,
    paired_stats,
    parse_metric,
    per_user_metric,
    permutation_test,
    t_test,
    wilcoxon_test,
)
from recbench.runs.metrics import metrics_from_ranks

# Eight users' differences: small enough to enumerate all 2**8 sign flips by hand.
TINY = np.array([0.30, -0.10, 0.25, 0.40, 0.05, -0.20, 0.35, 0.15])


def paired_sample(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-user NDCG@10 of two correlated methods (many ties at 0, as in real runs)."""
    rng = np.random.default_rng(seed)
    base = rng.geometric(1 / 30, n)
    other = np.maximum(1, base + rng.integers(-6, 4, n))
    return per_user_metric(other, "ndcg@10"), per_user_metric(base, "ndcg@10")


# --- per-user metrics -------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["hr@5", "ndcg@10", "mrr@20", "mrr", "hr@50"])
def test_per_user_metric_averages_to_the_evaluator_metric(metric: str) -> None:
    ranks = np.random.default_rng(1).integers(1, 80, 500).astype(np.int32)
    assert per_user_metric(ranks, metric).mean() == pytest.approx(metrics_from_ranks(ranks)[metric], abs=1e-12)


def test_recall_is_read_as_hit_rate() -> None:
    assert parse_metric("Recall@20") == ("hr", 20)


@pytest.mark.parametrize("metric", ["ndcg", "map@10", "hr@0", "ndcg@x"])
def test_unknown_metric_is_a_user_error(metric: str) -> None:
    with pytest.raises(RecbenchError, match="unknown metric"):
        parse_metric(metric)


# --- tests against scipy ----------------------------------------------------------------------
def test_t_test_matches_scipy_ttest_rel() -> None:
    a, b = paired_sample()
    assert t_test(a - b) == pytest.approx(scipy.stats.ttest_rel(a, b).pvalue, rel=1e-12)


def test_wilcoxon_matches_scipy_wilcoxon_on_pairs() -> None:
    a, b = paired_sample()
    assert wilcoxon_test(a - b) == pytest.approx(scipy.stats.wilcoxon(a, b).pvalue, rel=1e-12)


def test_matrix_columns_give_the_same_p_values_as_single_vectors() -> None:
    columns = np.column_stack([np.subtract(*paired_sample(seed=s)) for s in range(3)])
    for test in (t_test, wilcoxon_test):
        assert np.allclose(test(columns), [test(columns[:, j]) for j in range(3)], rtol=1e-12)


@pytest.mark.parametrize("test", [t_test, wilcoxon_test, permutation_test])
def test_identical_methods_get_p_equal_to_one(test) -> None:
    assert test(np.zeros(50)) == 1.0


# --- permutation test -------------------------------------------------------------------------
def enumerated_p(diffs: np.ndarray) -> float:
    """Fraction of all 2**n sign vectors whose |sum| reaches the observed |sum| (plain Python)."""
    observed = abs(sum(diffs))
    hits = sum(
        abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12
        for signs in itertools.product((1, -1), repeat=len(diffs))
    )
    return hits / 2 ** len(diffs)


def test_exact_permutation_p_equals_enumeration_of_all_sign_flips() -> None:
    assert permutation_test(TINY, exact=True) == pytest.approx(enumerated_p(TINY), abs=1e-15)


def test_exact_permutation_p_matches_scipy_permutation_test() -> None:
    result = scipy.stats.permutation_test(
        (TINY, np.zeros_like(TINY)),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        n_resamples=np.inf,
        vectorized=True,
    )
    assert permutation_test(TINY, exact=True) == pytest.approx(result.pvalue, abs=1e-12)


def test_monte_carlo_permutation_p_is_close_to_the_exact_p() -> None:
    exact = enumerated_p(TINY)  # 28/256 ~ 0.11
    assert abs(permutation_test(TINY, n_permutations=20_000, seed=3) - exact) < 0.01


def test_permutation_p_is_the_same_twice_under_a_seed() -> None:
    a, b = paired_sample()
    assert permutation_test(a - b, n_permutations=2_000, seed=7) == permutation_test(
        a - b, n_permutations=2_000, seed=7
    )


def test_permutation_p_counts_the_observed_statistic_as_plus_one() -> None:
    # All 40 differences positive: no random flip reaches the observed sum, so c = 0.
    assert permutation_test(np.linspace(0.1, 1.0, 40), n_permutations=999, seed=0) == pytest.approx(1 / 1000)


def test_permutation_p_is_close_to_the_t_test_p_on_many_users() -> None:
    a, b = paired_sample(n=3000, seed=5)
    assert permutation_test(a - b, n_permutations=5_000, seed=1) == pytest.approx(t_test(a - b), abs=0.02)


def test_exact_permutation_refuses_too_many_users() -> None:
    with pytest.raises(RecbenchError, match="exact"):
        permutation_test(np.arange(1.0, 30.0), exact=True)


# --- bootstrap --------------------------------------------------------------------------------
def test_bootstrap_ci_is_close_to_scipy_percentile_bootstrap() -> None:
    a, b = paired_sample(n=1000)  # most differences are 0: exercises drawing only the non-zero users
    low, high = bootstrap_ci(a - b, n_resamples=4000, seed=0)
    reference = scipy.stats.bootstrap(
        (a - b,), np.mean, method="percentile", n_resamples=4000, rng=np.random.default_rng(1)
    ).confidence_interval
    width = reference.high - reference.low
    assert abs(low - reference.low) < 0.08 * width and abs(high - reference.high) < 0.08 * width


def test_bootstrap_ci_of_each_column_equals_its_single_vector_ci() -> None:
    columns = np.random.default_rng(2).normal(0.01, 0.1, size=(300, 3))  # no zeros: same users resampled
    lows, highs = bootstrap_ci(columns, n_resamples=500, seed=4)
    for j in range(3):
        assert (lows[j], highs[j]) == pytest.approx(
            bootstrap_ci(columns[:, j], n_resamples=500, seed=4), rel=1e-12
        )  # same resamples


def test_bootstrap_ci_of_identical_methods_is_zero() -> None:
    assert bootstrap_ci(np.zeros(20)) == (0.0, 0.0)


# --- corrections ------------------------------------------------------------------------------
P = [0.01, 0.04, 0.03, 0.005]


def test_holm_matches_hand_computation() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert adjust(P, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_adjusted_p_at_one() -> None:
    assert adjust([0.5, 0.6], "holm") == pytest.approx([1.0, 1.0])


def test_bonferroni_matches_hand_computation() -> None:
    assert adjust(P, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])


def test_benjamini_hochberg_matches_hand_computation() -> None:
    # sorted: 0.005*4/1 = 0.02, 0.01*4/2 = 0.02, 0.03*4/3 = 0.04, 0.04*4/4 = 0.04 (then running min from the top)
    assert adjust(P, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])


def test_no_correction_returns_the_p_values() -> None:
    assert adjust(P, "none") == pytest.approx(P)


def test_unknown_correction_is_a_user_error() -> None:
    with pytest.raises(RecbenchError, match="unknown correction"):
        adjust(P, "sidak")


# --- effect sizes, seeds, pairs ---------------------------------------------------------------
def test_paired_stats_effect_sizes_match_hand_computation() -> None:
    (stats,) = paired_stats(np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 0.0]))
    # d = [1, 0, 0, 1]: mean 0.5, sd sqrt(1/3), other mean 0.25
    assert (stats.mean_diff, stats.relative_pct, stats.effect_dz) == pytest.approx((0.5, 200.0, 0.5 / np.sqrt(1 / 3)))
    assert (stats.wins, stats.ties, stats.losses) == (2, 2, 0)


def test_paired_stats_p_value_uses_the_chosen_test() -> None:
    a, b = paired_sample()
    (stats,) = paired_stats(a, b, test="wilcoxon")
    assert stats.p_value == pytest.approx(scipy.stats.wilcoxon(a, b).pvalue, rel=1e-12)


def test_float_noise_in_differences_counts_as_a_tie() -> None:
    assert paired_differences(np.array([0.1 + 0.2]), np.array([0.3]))[0] == 0.0


def test_across_seeds_gives_mean_and_sample_std_of_seed_means_and_per_user_average() -> None:
    summary = across_seeds([np.array([1.0, 0.0]), np.array([0.0, 0.0]), np.array([1.0, 1.0])])
    # seed means 0.5, 0.0, 1.0
    assert (summary.mean, summary.std, summary.n_seeds) == pytest.approx((0.5, 0.5, 3))
    assert summary.per_user == pytest.approx([2 / 3, 1 / 3])


def test_one_seed_has_no_std() -> None:
    assert np.isnan(across_seeds([np.array([1.0, 0.0])]).std)


def test_pairs_are_each_method_vs_the_baseline_or_all_pairs() -> None:
    assert comparison_pairs(["a", "b", "c"], baseline="b") == [("a", "b"), ("c", "b")]
    assert comparison_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]
