"""Pure statistics for the analysis (numpy, scipy.stats; no lmms-eval, no plotting). The bootstrap and the
balanced means are the metrics' own (`radar_tasks.metrics.sds`).

Everything random takes a `numpy.random.Generator` or a seed, so reports are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import scipy.stats

from radar_tasks.metrics.sds import bootstrap_means

Z95 = 1.959963984540054  # two-sided 95% normal quantile


# ---------------------------------------------------------------------------------------------------------------
# Bootstrap


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored; (nan, nan) when none is finite)."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return (math.nan, math.nan)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(r, [a, 1.0 - a])
    return (float(lo), float(hi))


def replicate_se(replicates: np.ndarray) -> float:
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    return float(r.std(ddof=1)) if r.size > 1 else math.nan


def bootstrap_ci(values: Sequence[float], iters: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of `values` with its bootstrap standard error and percentile confidence interval."""
    x = np.asarray(values, dtype=np.float64)
    reps = bootstrap_means(x, iters, np.random.default_rng(seed))
    lo, hi = percentile_ci(reps, level)
    return {
        "mean": float(x.mean()) if x.size else math.nan,
        "se": replicate_se(reps),
        "ci_low": lo,
        "ci_high": hi,
        "n": int(x.size),
    }


def paired_bootstrap(
    diffs: Mapping[Hashable, Sequence[float]], iters: int = 2000, seed: int = 0
) -> dict[Hashable, np.ndarray]:
    """Bootstrap replicates of the mean paired difference per stratum (resampling items within each stratum).

    `diffs` maps a stratum (e.g. (subset, category)) to the per-item differences a_i - b_i of the items both runs
    scored. Resampling the differences is resampling the matched items: both runs always get the same draw.
    Strata are drawn in sorted order from one generator, so the result depends only on the data and the seed.
    """
    rng = np.random.default_rng(seed)
    return {k: bootstrap_means(diffs[k], iters, rng) for k in sorted(diffs, key=repr)}


def two_sided_p(replicates: np.ndarray) -> float:
    """Bootstrap two-sided p-value of "no difference": 2 * min(P(rep <= 0), P(rep >= 0)), capped at 1."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan
    return float(min(1.0, 2.0 * min((r <= 0).mean(), (r >= 0).mean())))


# ---------------------------------------------------------------------------------------------------------------
# Rank correlation


def _finite_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """x and y as float arrays without the pairs where either is NaN or infinite."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape:
        raise ValueError(f"kendall_tau: {xa.size} x values for {ya.size} y values")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (`scipy.stats.kendalltau`; ties in either variable handled); pairs with NaN or inf are
    dropped first; NaN for fewer than 2 points or a constant variable (asked of scipy, that warns)."""
    xa, ya = _finite_pairs(x, y)
    if xa.size < 2 or np.all(xa == xa[0]) or np.all(ya == ya[0]):
        return math.nan
    return float(scipy.stats.kendalltau(xa, ya).statistic)


def kendall_tau_pvalue(x: Sequence[float], y: Sequence[float], iters: int = 10000, seed: int = 0) -> float:
    """Two-sided permutation p-value of Kendall's tau-b (`scipy.stats.permutation_test`, y permuted against x):
    exact (all n! orderings) for n <= 8, else `iters` random orderings drawn from `seed` (p = (hits + 1) /
    (iters + 1), scipy's Monte Carlo estimate, which includes the observed ordering).

    The test statistic is |S|, S = concordant - discordant pairs, tau-b's numerator: the denominator
    sqrt((n0 - tx) * (n0 - ty)) counts the pairs untied in x and in y, which no ordering of y changes, so
    |S| >= |S_obs| exactly when |tau_b| >= |tau_b_obs|; and S is computed for a whole batch of orderings at once
    (`scipy.stats.kendalltau` takes one ordering per call: about 30 s for the 40320 orderings of n = 8).
    """
    xa, ya = _finite_pairs(x, y)
    if math.isnan(kendall_tau(xa, ya)):
        return math.nan
    i, j = np.triu_indices(xa.size, k=1)
    x_order = np.sign(xa[i] - xa[j])

    def abs_s(y_batch: np.ndarray, axis: int = -1) -> np.ndarray:  # y_batch: (orderings, n)
        return np.abs(np.sign(y_batch[..., i] - y_batch[..., j]) @ x_order)

    result = scipy.stats.permutation_test(
        (ya,),
        abs_s,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=math.inf if xa.size <= 8 else iters,
        batch=1000,
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)


# ---------------------------------------------------------------------------------------------------------------
# Asymmetry and signal


def asymmetry_gap(
    sds_perception: float, chance_perception: float, sds_reasoning: float, chance_reasoning: float
) -> float:
    """gap = (SDS_perception - chance_perception) - (SDS_reasoning - chance_reasoning).

    Positive: perception sits further above its chance level than reasoning does. NaN when a part is unknown.
    """
    parts = (sds_perception, chance_perception, sds_reasoning, chance_reasoning)
    if any(v is None or not math.isfinite(v) for v in parts):
        return math.nan
    return (sds_perception - chance_perception) - (sds_reasoning - chance_reasoning)


def rates(prev: tuple[float, float, float], cur: tuple[float, float, float]) -> dict:
    """Rates of change between two checkpoints, from (x, sds_perception, sds_reasoning) at each.

    rate_a = (SDS_a(cur) - SDS_a(prev)) / (x(cur) - x(prev)); rate_ratio = rate_perception / rate_reasoning
    (= the ratio of the SDS changes: the x step cancels). The ratio is NaN when the reasoning change is 0 and
    the rates are NaN when x does not advance. Chance levels cancel in the changes when the items are the same.
    """
    (x0, p0, r0), (x1, p1, r1) = prev, cur
    dx = x1 - x0
    dp, dr = p1 - p0, r1 - r0
    rate_p = dp / dx if dx else math.nan
    rate_r = dr / dx if dx else math.nan
    ratio = dp / dr if dr else math.nan
    return {
        "delta_perception": dp,
        "delta_reasoning": dr,
        "rate_perception": rate_p,
        "rate_reasoning": rate_r,
        "rate_ratio": ratio,
    }


def spread_over_stderr(scores: Sequence[float], stderrs: Sequence[float]) -> float:
    """Spread of a score across a series over its evaluation noise: std (ddof=1) of the scores / mean of their
    stderrs (the report's signal check; not the published signal-to-noise ratio, `relative_signal` /
    `relative_noise`).

    NaN for fewer than 2 finite scores or no finite stderr; inf when the noise is 0 and the scores vary.
    """
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    e = np.asarray(stderrs, dtype=np.float64)
    e = e[np.isfinite(e)]
    if s.size < 2 or e.size == 0:
        return math.nan
    spread = float(s.std(ddof=1))
    noise = float(e.mean())
    if noise == 0:
        return math.inf if spread > 0 else math.nan
    return spread / noise


def z_above(value: float, reference: float, stderr: float) -> float:
    """(value - reference) / stderr; NaN when any part is unknown.

    A zero stderr (every item scored alike, e.g. acc 1.0) gives +-inf when value and reference differ: certain.
    """
    if any(v is None or not math.isfinite(v) for v in (value, reference, stderr)) or stderr < 0:
        return math.nan
    if stderr == 0:
        return math.copysign(math.inf, value - reference) if value != reference else math.nan
    return (value - reference) / stderr


# ---------------------------------------------------------------------------------------------------------------
# Signal and noise as published (Heineman et al., 2025), and takeoff


def relative_noise(scores: Sequence[float]) -> float:
    """noise = std (ddof=0) of a series' last scores / their mean: the published noise (its code takes numpy's
    default std). NaN for fewer than 2 scores, a non-finite one, or a mean of 0."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size < 2 or not np.all(np.isfinite(s)) or s.mean() == 0:
        return math.nan
    return float(s.std() / s.mean())


def relative_signal(finals: Sequence[float]) -> float:
    """signal = max over pairs |f_j - f_k| / mean(f) of the series' final scores: the published signal. NaN for
    fewer than 2 finite finals or a mean of 0 (non-finite finals are left out)."""
    f = np.asarray(finals, dtype=np.float64)
    f = f[np.isfinite(f)]
    if f.size < 2 or f.mean() == 0:
        return math.nan
    return float((f.max() - f.min()) / f.mean())  # the largest pairwise difference is max - min


def ratio(signal: float, noise: float) -> float:
    """signal / noise; inf when the noise is 0 and the signal is not, NaN when either is unknown or both are 0."""
    if not (math.isfinite(signal) and math.isfinite(noise)):
        return math.nan
    if noise == 0:
        return math.inf if signal > 0 else math.nan
    return signal / noise


def takeoff_index(zs: Sequence[float], threshold: float = Z95) -> int | None:
    """The first position from which every z to the end is above `threshold` (an unknown z is not above);
    None when the last one is not."""
    start = None
    for i, z in enumerate(zs):
        if z is not None and z > threshold:  # NaN is never above; +inf (a zero stderr) is
            start = i if start is None else start
        else:
            start = None
    return start
