"""Statistics for the report: paired wins, cluster bootstrap intervals, sign test, Holm.

Pure functions over numpy arrays (no I/O, no scipy). Three choices shape every number here:

* **The prompt is the unit of resampling.** Images of one prompt (several seeds, the same
  prompt text) are correlated, so an i.i.d. bootstrap over images would give intervals that are
  too narrow. ``cluster_bootstrap_ci`` resamples whole prompts with replacement and recomputes the
  mean over all values of the drawn prompts (so a prompt weighs by its number of images).
* **Training replicates are a second level.** Runs that differ only in their training seed are
  replicates of one arm; they draw the same prompts with the same seeds, so prompts are crossed with
  replicates. ``two_level_ci`` resamples both: K replicates with replacement and one set of prompts
  with replacement shared by them, so its interval covers another training run, which a prompt-only
  interval does not. With identical replicates it is the prompt-only interval.
* **The significance test is over prompts too.** ``sign_test_p`` takes one outcome per prompt
  (the mean win over its seeds), drops ties and runs the exact two-sided binomial sign test.
  ``holm`` then adjusts the p-values of the methods compared within one table.
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.05  # significance level of every test and ✱ marker in the report
_MAX_DRAWS_PER_CHUNK = 4_000_000  # resamples × clusters drawn at once: ~80 MB of temporaries


def paired_wins(method_scores: np.ndarray, base_scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """(N,) 1.0 where the method scores better (higher, or lower for a lower-is-better reward), 0.5 where
    equal, 0.0 where worse: the store's ``pairs.win``."""
    m = np.asarray(method_scores, dtype=np.float64)
    b = np.asarray(base_scores, dtype=np.float64)
    if m.shape != b.shape:
        raise ValueError(f"method and base scores differ in shape: {m.shape} vs {b.shape}")
    better = m > b if higher_is_better else m < b
    return np.where(better, 1.0, np.where(m == b, 0.5, 0.0))


def _cluster_codes(values: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums and sizes, (K,) each, for any hashable-sortable cluster labels."""
    if values.ndim != 1 or values.shape != clusters.shape:
        raise ValueError(f"values and clusters must be 1-D and equally long: {values.shape} vs {clusters.shape}")
    if values.size == 0:
        raise ValueError("cannot bootstrap an empty sample")
    if not np.all(np.isfinite(values)):
        raise ValueError("values contain NaN or inf")
    _, codes = np.unique(clusters, return_inverse=True)
    codes = codes.ravel()
    sizes = np.bincount(codes).astype(np.float64)
    sums = np.bincount(codes, weights=values)
    return sums, sizes


def cluster_bootstrap_ci(
    values: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling whole clusters with replacement.

    Each resample draws K clusters out of the K present and takes sum(values) / count(values)
    over the drawn clusters. Working on per-cluster sums makes a resample cost O(K), not O(N):
    10,000 clusters × 1000 resamples is 10^7 gathers whatever the number of values.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    v = np.asarray(values, dtype=np.float64)
    sums, sizes = _cluster_codes(v, np.asarray(clusters))
    return cluster_sums_ci(sums, sizes, (float(v.min()), float(v.max())), n_boot=n_boot, seed=seed, alpha=alpha)


def cluster_sums_ci(
    sums: np.ndarray,
    sizes: np.ndarray,
    bounds: tuple[float, float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """``cluster_bootstrap_ci`` from per-cluster sums and sizes, (K,) each, already aggregated.

    ``bounds`` is (min, max) of the underlying values: the interval is clipped to it, and collapses
    to a point when they are equal. Lets a caller aggregate per prompt in SQL and bootstrap subsets
    of prompts (one category) without the per-image values.
    """
    sums, sizes = np.asarray(sums, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    if sums.ndim != 1 or sums.shape != sizes.shape:
        raise ValueError(f"sums and sizes must be 1-D and equally long: {sums.shape} vs {sizes.shape}")
    return cluster_sums_cis(sums[:, None], sizes[:, None], [bounds], n_boot=n_boot, seed=seed, alpha=alpha)[0]


def cluster_sums_cis(
    sums: np.ndarray,
    sizes: np.ndarray,
    bounds: list[tuple[float, float]],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[tuple[float, float]]:
    """``cluster_sums_ci`` for m statistics over the same number K of clusters at once.

    ``sums`` and ``sizes`` are (K, m): column j holds the per-cluster sums and sizes of statistic j
    (its clusters in any fixed order). The resamples depend only on (K, n_boot, seed), so each
    column gets exactly the interval it would get alone; sharing them turns m gathers into one
    matrix product: (b, K) multiplicities of the drawn clusters @ (K, m) sums.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    sums, sizes = np.asarray(sums, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    if sums.ndim != 2 or sums.shape != sizes.shape or sums.shape[0] == 0 or sums.shape[1] != len(bounds):
        raise ValueError(f"sums and sizes must be (K, m) with K > 0 and m bounds: {sums.shape}, {sizes.shape}, "
                         f"{len(bounds)} bounds")
    out: list[tuple[float, float]] = [(float(lo), float(hi)) for lo, hi in bounds]
    # Where min == max every resample has this mean; skip the rounding noise of the sums.
    live = [j for j, (lo, hi) in enumerate(bounds) if lo != hi]
    if not live:
        return out
    num, den = sums[:, live], sizes[:, live]
    stats = np.empty((n_boot, len(live)), dtype=np.float64)
    for start, stop, counts in _multiplicities(sums.shape[0], n_boot, seed):
        stats[start:stop] = (counts @ num) / (counts @ den)
    return _percentiles(stats, bounds, live, out, alpha)


def _multiplicities(k: int, n_boot: int, seed: int):
    """Yield (start, stop, (b, k) float counts): how often each of k clusters is drawn in resamples
    start..stop, k draws with replacement each. The draws depend only on (k, n_boot, seed), so the
    prompts a two-level bootstrap draws are those a prompt-only one with the same seed draws."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // k)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        draws = rng.integers(0, k, size=(stop - start, k), dtype=np.int32)  # (b, K) cluster indices
        yield start, stop, _counts(draws, k)


def _counts(draws: np.ndarray, k: int) -> np.ndarray:
    """(b, k) float: how often each of k indices occurs in each row of the (b, n) draws."""
    offsets = np.arange(draws.shape[0], dtype=np.int64)[:, None] * k
    counts = np.bincount((draws + offsets).ravel(), minlength=draws.shape[0] * k)
    return counts.reshape(draws.shape[0], k).astype(np.float64)


def _percentiles(stats: np.ndarray, bounds: list[tuple[float, float]], live: list[int],
                 out: list[tuple[float, float]], alpha: float) -> list[tuple[float, float]]:
    """Fill ``out[j]`` for each live column j of the (n_boot, len(live)) resampled statistics (NaN:
    a resample without values, left out) with its percentile interval, clipped to ``bounds[j]``."""
    q = [alpha / 2.0, 1.0 - alpha / 2.0]
    low, high = np.quantile(stats, q, axis=0) if not np.isnan(stats).any() else np.nanquantile(stats, q, axis=0)
    for col, j in enumerate(live):
        lowest, highest = bounds[j]
        # A resampled mean cannot leave [min, max] of the values; clip what rounding pushed out.
        out[j] = (float(np.clip(low[col], lowest, highest)), float(np.clip(high[col], lowest, highest)))
    return out


def two_level_ci(
    sums: np.ndarray,
    counts: np.ndarray,
    bounds: tuple[float, float],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a pooled mean over R training replicates × P prompts.

    ``sums`` and ``counts`` are (R, P): replicate r's sum of values (wins, scores) on prompt p and how
    many there are (0 where the replicate lacks the prompt). The replicates share their prompts (and
    seeds and initial noise): prompts are a factor crossed with replicates, not nested in them. So each
    resample draws R replicates with replacement, and independently one set of P prompts with
    replacement that all drawn replicates share, and takes
    sum over drawn (replicate, prompt) of sums / sum of their counts (a replicate or prompt drawn twice
    counts twice). The interval then covers another training run as well as other prompts.

    The prompts drawn are exactly those of ``cluster_sums_ci`` with the same seed, so with identical
    replicates (or R = 1) the interval is the prompt-only one of the pooled sums; replicates that
    disagree widen it. ``bounds``: (min, max) of the underlying values, as in ``cluster_sums_ci``.
    """
    sums, counts = np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if sums.ndim != 2 or sums.shape != counts.shape:
        raise ValueError(f"sums and counts must be (R, P) and alike: {sums.shape} vs {counts.shape}")
    return two_level_cis(sums[:, :, None], counts[:, :, None], [bounds], n_boot=n_boot, seed=seed, alpha=alpha)[0]


def two_level_cis(
    sums: np.ndarray,
    counts: np.ndarray,
    bounds: list[tuple[float, float]],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[tuple[float, float]]:
    """``two_level_ci`` for m statistics over the same (R, P) at once: ``sums`` and ``counts`` (R, P, m).

    The resamples depend only on (R, P, n_boot, seed), so each statistic gets exactly the interval it
    would get alone. Per chunk of b resamples: (b, P) prompt multiplicities C, (b, R) replicate
    multiplicities M, and the statistic is sum_r M[:, r] · (C @ sums[r]) / sum_r M[:, r] · (C @ counts[r]).
    A resample whose drawn replicates hold none of its drawn prompts has no mean and is left out.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    sums, counts = np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if sums.ndim != 3 or sums.shape != counts.shape or 0 in sums.shape[:2] or sums.shape[2] != len(bounds):
        raise ValueError(f"sums and counts must be (R, P, m) with R, P > 0 and m bounds: {sums.shape}, "
                         f"{counts.shape}, {len(bounds)} bounds")
    if not (np.all(np.isfinite(sums)) and np.all(np.isfinite(counts)) and np.all(counts >= 0)):
        raise ValueError("sums must be finite and counts finite and >= 0")
    if np.any(counts.sum(axis=1) == 0):
        raise ValueError("a replicate has no values for some statistic: drop it before bootstrapping")
    out: list[tuple[float, float]] = [(float(lo), float(hi)) for lo, hi in bounds]
    live = [j for j, (lo, hi) in enumerate(bounds) if lo != hi]
    if not live:
        return out
    n_rep = sums.shape[0]
    num, den = sums[:, :, live], counts[:, :, live]  # (R, P, m')
    rep_rng = np.random.default_rng([seed, 2])  # a stream of its own: the prompt draws stay those of seed
    stats = np.empty((n_boot, len(live)), dtype=np.float64)
    for start, stop, c in _multiplicities(sums.shape[1], n_boot, seed):
        m = _counts(rep_rng.integers(0, n_rep, size=(stop - start, n_rep)), n_rep)  # (b, R) multiplicities
        top = np.einsum("br,brm->bm", m, np.einsum("bp,rpm->brm", c, num))
        bottom = np.einsum("br,brm->bm", m, np.einsum("bp,rpm->brm", c, den))
        with np.errstate(invalid="ignore", divide="ignore"):
            stats[start:stop] = np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), np.nan)
    return _percentiles(stats, bounds, live, out, alpha)


def mean_ci(
    values: np.ndarray,
    clusters: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float, float]:
    """(mean, low, high): the mean of all values and its cluster-bootstrap interval."""
    v = np.asarray(values, dtype=np.float64)
    low, high = cluster_bootstrap_ci(v, clusters, n_boot=n_boot, seed=seed, alpha=alpha)
    # A point interval (constant values, or a single cluster) is the mean itself; summing can
    # round it one ulp away (20 × 0.1 / 20 = 0.10000000000000002), outside its own interval.
    return (low if low == high else float(v.mean())), low, high


def per_cluster_means(values: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """(K,) mean of the values of each cluster, clusters in sorted label order."""
    sums, sizes = _cluster_codes(np.asarray(values, dtype=np.float64), np.asarray(clusters))
    return sums / sizes


def _log_binom_tail_half(n: int, k: int) -> float:
    """log P(X >= k) for X ~ Binomial(n, 1/2), exact up to float rounding, for any n.

    log C(n, i) is built by a cumulative sum of log((n - i) / (i + 1)) and the tail summed with
    log-sum-exp, so nothing overflows and no normal approximation is needed even for n = 10^6.
    """
    if k <= 0:
        return 0.0
    if k > n:
        return -math.inf
    i = np.arange(k, n, dtype=np.float64)
    log_first = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    log_terms = np.concatenate(([log_first], log_first + np.cumsum(np.log(n - i) - np.log(i + 1))))
    top = log_terms.max()
    return float(top + np.log(np.exp(log_terms - top).sum()) - n * math.log(2.0))


def sign_test_p(wins: np.ndarray) -> float:
    """Two-sided exact sign test: are per-prompt outcomes above 0.5 as likely as below?

    ``wins`` holds one outcome per prompt in [0, 1] (e.g. the mean of its paired wins); exactly
    0.5 is a tie and is dropped. With no untied prompt there is no evidence either way: p = 1.
    """
    w = np.asarray(wins, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError("wins contain NaN or inf")
    n_up = int(np.count_nonzero(w > 0.5))
    n_down = int(np.count_nonzero(w < 0.5))
    n = n_up + n_down
    if n == 0:
        return 1.0
    k = max(n_up, n_down)
    if 2 * k == n:
        return 1.0
    return min(1.0, 2.0 * math.exp(_log_binom_tail_half(n, k)))


def holm(pvalues: list[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order (controls the family-wise error)."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError(f"p-values must lie in [0, 1]: {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (m - np.arange(m))  # (m,) p_(j) × (m − j), j from 0
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled))
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted
    return out
