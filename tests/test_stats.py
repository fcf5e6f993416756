"""bench.report.stats against hand-computed values and seeded simulations."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from bench.report import stats


def test_paired_wins_counts_ties_as_half():
    wins = stats.paired_wins(np.array([2.0, 1.0, 0.5, -1.0]), np.array([1.0, 1.0, 0.7, -3.0]))
    np.testing.assert_array_equal(wins, [1.0, 0.5, 0.0, 1.0])


def test_paired_wins_of_a_lower_is_better_reward_count_the_lower_score():
    wins = stats.paired_wins(np.array([2.0, 1.0, 0.5, -1.0]), np.array([1.0, 1.0, 0.7, -3.0]), higher_is_better=False)
    np.testing.assert_array_equal(wins, [0.0, 0.5, 1.0, 0.0])


def test_paired_wins_refuses_unaligned_inputs():
    with pytest.raises(ValueError, match="shape"):
        stats.paired_wins(np.zeros(3), np.zeros(4))


def test_bootstrap_ci_collapses_to_a_point_for_constant_values():
    values = np.full(50, 0.1)  # 0.1 is not exact in binary: sums of it would drift without the special case
    clusters = np.repeat(np.arange(10), 5)
    assert stats.cluster_bootstrap_ci(values, clusters) == (0.1, 0.1)
    assert stats.mean_ci(values, clusters) == (0.1, 0.1, 0.1)  # the point stays inside its interval


def test_bootstrap_resamples_whole_clusters_weighted_by_size():
    # Cluster A holds three zeros, cluster B one 1. A resample draws 2 clusters: AA -> 0 (p 1/4),
    # AB or BA -> 1/4 (p 1/2), BB -> 1 (p 1/4). The central 2% of the distribution is therefore
    # exactly 1/4; an unweighted mean of cluster means would give 1/2 instead.
    values = np.array([0.0, 0.0, 0.0, 1.0])
    clusters = np.array(["a", "a", "a", "b"])
    assert stats.cluster_bootstrap_ci(values, clusters, n_boot=4000, alpha=0.98) == (0.25, 0.25)
    assert stats.cluster_bootstrap_ci(values, clusters, n_boot=4000) == (0.0, 1.0)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    values, clusters = rng.normal(size=200), rng.integers(0, 20, 200)
    first = stats.cluster_bootstrap_ci(values, clusters, seed=3)
    assert stats.cluster_bootstrap_ci(values, clusters, seed=3) == first
    assert stats.cluster_bootstrap_ci(values, clusters, seed=4) != first
    low, high = first
    assert low < values.mean() < high


def _coverage(cluster_labels_of: str, n_sim: int = 500) -> float:
    """How often the 95% interval holds the true mean 0 with strongly correlated clusters."""
    rng = np.random.default_rng(0)
    n_clusters, per_cluster = 100, 5
    clusters = np.repeat(np.arange(n_clusters), per_cluster)
    hits = 0
    for i in range(n_sim):
        effect = rng.normal(size=n_clusters)[clusters]  # shared by the images of one prompt
        values = effect + rng.normal(size=clusters.size)
        labels = clusters if cluster_labels_of == "prompt" else np.arange(clusters.size)
        low, high = stats.cluster_bootstrap_ci(values, labels, n_boot=400, seed=i)
        hits += low <= 0.0 <= high
    return hits / n_sim


def test_cluster_bootstrap_covers_where_an_iid_bootstrap_does_not():
    # Intra-cluster correlation 0.5 with 5 per cluster: the variance of the mean is 3x what an
    # i.i.d. bootstrap assumes, so its 95% interval covers ~75% of the time.
    assert 0.88 <= _coverage("prompt") <= 0.99  # 0.92 here: 500 simulations leave ±0.012
    assert _coverage("image") < 0.82  # 0.73 here


def test_bootstrap_is_fast_on_a_million_values():
    rng = np.random.default_rng(0)
    values, clusters = rng.normal(size=1_000_000), rng.integers(0, 10_000, 1_000_000)
    start = time.process_time()  # CPU time: other jobs on a shared machine do not inflate it
    low, high = stats.cluster_bootstrap_ci(values, clusters, n_boot=1000)
    assert time.process_time() - start < 3.0  # ~0.3 s on a 2-core VM
    assert low < values.mean() < high


def test_bootstrap_refuses_bad_input():
    with pytest.raises(ValueError, match="empty"):
        stats.cluster_bootstrap_ci(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="NaN"):
        stats.cluster_bootstrap_ci(np.array([1.0, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="equally long"):
        stats.cluster_bootstrap_ci(np.zeros(3), np.zeros(2))


def test_mean_ci_returns_the_mean_and_its_interval():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    mean, low, high = stats.mean_ci(values, np.array([0, 0, 1, 1, 2, 2]))
    assert mean == 3.5
    assert 1.5 <= low < mean < high <= 5.5  # cluster means are 1.5, 3.5, 5.5


def test_per_cluster_means_in_label_order():
    np.testing.assert_array_equal(
        stats.per_cluster_means(np.array([1.0, 0.0, 0.5, 1.0]), np.array(["b", "a", "a", "b"])), [0.25, 1.0]
    )


def test_sign_test_hand_computed():
    # n = 10, 9 wins: p = 2 (C(10,9) + C(10,10)) / 2^10 = 22/1024
    wins = np.array([1.0] * 9 + [0.0])
    assert stats.sign_test_p(wins) == pytest.approx(22 / 1024, rel=1e-12)
    assert stats.sign_test_p(1.0 - wins) == pytest.approx(22 / 1024, rel=1e-12)


def test_sign_test_drops_ties():
    wins = np.array([1.0] * 9 + [0.0] + [0.5] * 7)
    assert stats.sign_test_p(wins) == pytest.approx(22 / 1024, rel=1e-12)
    assert stats.sign_test_p(np.full(5, 0.5)) == 1.0
    assert stats.sign_test_p(np.array([1.0, 0.0])) == 1.0


def test_sign_test_matches_exact_binomial_sums():
    for n in (1, 7, 30, 301, 2000):
        for k in range(n // 2 + 1, n + 1, max(1, n // 13)):
            exact = min(1.0, 2 * sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n)
            got = stats.sign_test_p(np.array([1.0] * k + [0.0] * (n - k)))
            assert got == pytest.approx(exact, rel=1e-9, abs=1e-300), (n, k)


def test_sign_test_large_n_agrees_with_the_normal_approximation():
    n, k = 100_000, 50_400
    p = stats.sign_test_p(np.array([1.0] * k + [0.0] * (n - k)))
    z = (k - n / 2 - 0.5) / math.sqrt(n / 4)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), rel=0.01)


def test_holm_hand_computed():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    assert stats.holm([]).size == 0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.2, float("nan")])


# -- the two-level bootstrap: training replicates × prompts ------------------------------------------------------


def _per_prompt(rng: np.random.Generator, n_prompts: int = 40, per_prompt: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(P,) win sums and counts of one replicate: each prompt's seeds win 0, 1 or 2 times."""
    return rng.integers(0, per_prompt + 1, n_prompts).astype(float), np.full(n_prompts, float(per_prompt))


def test_two_level_with_identical_replicates_or_one_is_the_prompt_only_interval():
    sums, counts = _per_prompt(np.random.default_rng(0))
    for seed in (0, 3):
        prompt_only = stats.cluster_sums_ci(sums, counts, (0.0, 1.0), seed=seed)
        assert stats.two_level_ci(sums[None], counts[None], (0.0, 1.0), seed=seed) == prompt_only
        for k in (2, 3, 5):  # the same prompts are drawn: the statistic is the prompt-only one, up to rounding
            got = stats.two_level_ci(np.tile(sums, (k, 1)), np.tile(counts, (k, 1)), (0.0, 1.0), seed=seed)
            assert got == pytest.approx(prompt_only, rel=1e-12)


def test_two_level_widens_when_replicates_disagree():
    sums, counts = _per_prompt(np.random.default_rng(1))
    shifted = np.stack([np.clip(sums + d, 0, 2) for d in (-1.0, 0.0, 1.0)])  # win rates about 25%, 50%, 75%
    counts3 = np.tile(counts, (3, 1))
    pooled = stats.cluster_sums_ci(shifted.sum(0), counts3.sum(0), (0.0, 1.0))  # prompts only, pooled
    low, high = stats.two_level_ci(shifted, counts3, (0.0, 1.0))
    assert low < pooled[0] and high > pooled[1] and (high - low) > 2 * (pooled[1] - pooled[0])


def test_two_level_draws_replicates_weighted_by_their_counts():
    # One prompt; replicate A holds three zeros, B one 1. Two replicates drawn: AA -> 0 (p 1/4), AB or BA -> 1/4
    # (p 1/2), BB -> 1 (p 1/4): the central 2% is exactly 1/4, the 95% interval [0, 1].
    sums, counts = np.array([[0.0], [1.0]]), np.array([[3.0], [1.0]])
    assert stats.two_level_ci(sums, counts, (0.0, 1.0), n_boot=4000, alpha=0.98) == (0.25, 0.25)
    assert stats.two_level_ci(sums, counts, (0.0, 1.0), n_boot=4000) == (0.0, 1.0)


def test_two_level_hand_computed_with_a_replicate_lacking_a_prompt():
    # Replicate 0: prompt 0 wins 2 of 2, prompt 1 wins 0 of 2. Replicate 1: prompt 0 wins 1 of 2, lacks prompt 1.
    # Replicate draws {0,0} p 1/4, {0,1} p 1/2, {1,1} p 1/4, prompt draws alike; the statistic of each of the 9:
    #   reps {0,0}: prompts {0,0} 1, {0,1} 1/2, {1,1} 0;   reps {0,1}: 3/4, 1/2, 0;   reps {1,1}: 1/2, 1/2, none.
    # Leaving out the resample without values (p 1/16): P(0) = 3/15, P(1/2) = 9/15, P(3/4) = 2/15, P(1) = 1/15.
    sums, counts = np.array([[2.0, 0.0], [1.0, 0.0]]), np.array([[2.0, 2.0], [2.0, 0.0]])
    assert stats.two_level_ci(sums, counts, (0.0, 1.0), n_boot=20_000, alpha=0.5) == (0.5, 0.5)  # 25%, 75%
    assert stats.two_level_ci(sums, counts, (0.0, 1.0), n_boot=20_000, alpha=0.3) == (0.0, 0.75)  # 15%, 85%
    assert stats.two_level_ci(sums, counts, (0.0, 1.0), n_boot=20_000) == (0.0, 1.0)


def test_two_level_batched_intervals_equal_each_computed_alone():
    rng = np.random.default_rng(2)
    sums, counts = rng.normal(size=(3, 30, 2)), rng.integers(0, 3, size=(3, 30, 2)).astype(float)
    bounds = [(-9.0, 9.0), (-9.0, 9.0)]
    together = stats.two_level_cis(sums, counts, bounds, n_boot=300, seed=5)
    alone = [stats.two_level_ci(sums[:, :, j], counts[:, :, j], bounds[j], n_boot=300, seed=5) for j in range(2)]
    assert np.allclose(together, alone, rtol=1e-12, atol=0)
    assert stats.two_level_ci(sums[:, :, 0], counts[:, :, 0], (0.5, 0.5)) == (0.5, 0.5)  # constant values


def test_two_level_refuses_bad_input():
    with pytest.raises(ValueError, match=r"\(R, P\)"):
        stats.two_level_ci(np.zeros(3), np.zeros(3), (0.0, 1.0))
    with pytest.raises(ValueError, match="no values"):
        stats.two_level_ci(np.ones((2, 3)), np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), (0.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        stats.two_level_ci(np.array([[np.nan]]), np.ones((1, 1)), (0.0, 1.0))
