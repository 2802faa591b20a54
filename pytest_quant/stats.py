"""Paired statistics: how much worse is a candidate than its reference, on the same items.

Logic layer, numpy and the standard library only. Every function here takes
aligned per-item arrays: item ``i`` of ``reference`` and item ``i`` of
``candidate`` are the same benchmark question. Pairing removes the item
difficulty from the noise, so a few hundred items resolve differences that two
independent means would need thousands for.

Degradation ``D`` is oriented so that a positive value is a loss: for
accuracy-like metrics ``D = ref - cand``; for perplexity the relative increase
``ppl_cand / ppl_ref - 1``.

The two one-sided bounds are returned at confidence ``c`` each:
``P(D >= lower) >= c`` and ``P(D <= upper) >= c`` (together a ``2c - 1``
two-sided interval).

Methods:
- ``score`` (default for 0/1 scores): Tango's (1998) score bounds for a
  difference of paired proportions, one of the intervals Fagerland, Lydersen &
  Laake (2013) recommend for paired binomial data. It treats the number of
  changed answers as random, so one flip among 150 items yields an upper bound
  near 3pp, not 0.7pp, and no changed answer still yields a non-zero width. In
  simulations of near-identical models (tests/test_stats.py) its one-sided
  upper bound keeps >= 95% coverage; Newcombe's hybrid interval, which we tried,
  collapses when the two models agree on almost every item.
- ``exact``: conditional on the discordant pairs (McNemar's exact setting) the
  losses are Binomial(n_d, p); Clopper-Pearson bounds on ``p`` give bounds on
  ``D = n_d (2p - 1) / n``. Exact given n_d, but because it treats n_d as fixed
  its bounds are too tight when few answers change; kept for comparison. With
  no discordant pair it falls back to the rule of three, ``1 - alpha ** (1/n)``.
- ``bootstrap``: paired percentile bootstrap over items (seeded, so repeatable);
  the only choice for perplexity-type (ratio) metrics and continuous scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from pytest_quant.results import aggregate


@dataclass(frozen=True)
class Degradation:
    """The estimated loss of a candidate against its reference and its one-sided bounds."""

    estimate: float
    lower: float
    upper: float
    confidence: float
    n: int
    relative: bool
    method: str
    reference_value: float
    candidate_value: float
    worse_items: int | None = None  # items right in the reference, wrong in the candidate
    better_items: int | None = None

    @property
    def recovery(self) -> float:
        """Candidate as a fraction of the reference (>1 is noise in the candidate's favour, not a violation)."""
        if self.reference_value == 0:
            return math.nan
        return self.candidate_value / self.reference_value


def _as_array(x: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} has a non-finite score at item {bad}: {arr[bad]!r}")
    return arr


def _is_binary(*arrays: np.ndarray) -> bool:
    return all(np.all((a == 0.0) | (a == 1.0)) for a in arrays)


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _solve(f, target: float, increasing: bool) -> float:
    """Bisection for p in [0, 1] with f(p) == target, f monotone."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        val = f(mid)
        if (val < target) == increasing:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-13:
            break
    return (lo + hi) / 2


def clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds (each at ``confidence``) for a binomial proportion."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError(f"successes={successes} outside 0..{trials}")
    alpha = 1.0 - confidence
    # lower: P(X >= k; p) = alpha  <=>  1 - cdf(k-1; p) = alpha (increasing in p)
    lower = 0.0 if successes == 0 else _solve(lambda p: 1.0 - _binom_cdf(successes - 1, trials, p), alpha, True)
    # upper: P(X <= k; p) = alpha (decreasing in p)
    upper = 1.0 if successes == trials else _solve(lambda p: _binom_cdf(successes, trials, p), alpha, False)
    return lower, upper


def _tango_z(worse: int, better: int, n: int, delta: float) -> float:
    """Tango's score statistic for a loss ``delta`` = P(worse) - P(better) of paired 0/1 scores."""
    a = 2 * n
    b = -worse - better + (2 * n - worse + better) * delta
    c = -better * delta * (1 - delta)
    p_better = max(0.0, (-b + math.sqrt(max(0.0, b * b - 4 * a * c))) / (2 * a))  # constrained MLE
    var = n * (2 * p_better + delta * (1 - delta))
    num = worse - better - n * delta
    if var <= 0:
        return math.copysign(math.inf, num) if num else 0.0
    return num / math.sqrt(var)


def _tango_bounds(ref: np.ndarray, cand: np.ndarray, confidence: float) -> tuple[float, float, int, int]:
    n = ref.size
    worse = int(np.sum((ref == 1.0) & (cand == 0.0)))
    better = int(np.sum((ref == 0.0) & (cand == 1.0)))
    z = NormalDist().inv_cdf(confidence)
    d = (worse - better) / n

    def solve(target: float, lo: float, hi: float) -> float:  # the statistic decreases in delta
        for _ in range(100):
            mid = (lo + hi) / 2
            if _tango_z(worse, better, n, mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    return solve(z, -1.0, d), solve(-z, d, 1.0), worse, better


def _exact_bounds(ref: np.ndarray, cand: np.ndarray, confidence: float) -> tuple[float, float, int, int]:
    n = ref.size
    worse = int(np.sum((ref == 1.0) & (cand == 0.0)))
    better = int(np.sum((ref == 0.0) & (cand == 1.0)))
    discordant = worse + better
    if discordant == 0:
        flip = 1.0 - (1.0 - confidence) ** (1.0 / n)
        return -flip, flip, worse, better
    p_lo, p_hi = clopper_pearson(worse, discordant, confidence)
    scale = discordant / n
    return scale * (2 * p_lo - 1), scale * (2 * p_hi - 1), worse, better


def _bootstrap_stats(
    stat, n: int, confidence: float, resamples: int, seed: int, chunk: int = 1024
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    values = np.empty(resamples, dtype=np.float64)
    done = 0
    while done < resamples:
        m = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(m, n))
        values[done : done + m] = stat(idx)
        done += m
    alpha = 1.0 - confidence
    lower, upper = np.quantile(values, [alpha, confidence])
    return float(lower), float(upper)


def paired_degradation(
    reference: Sequence[float],
    candidate: Sequence[float],
    *,
    higher_is_better: bool,
    aggregation: str = "mean",
    metric: str = "",
    reference_weights: Sequence[float] | None = None,
    candidate_weights: Sequence[float] | None = None,
    relative: bool = False,
    confidence: float = 0.95,
    method: str = "auto",
    resamples: int = 10_000,
    seed: int = 0,
) -> Degradation:
    """Estimate the candidate's loss against the reference on the same (aligned) items.

    ``relative``: for ``mean`` metrics, the degradation is divided by the
    reference value on these items (a fixed number once the items are fixed);
    ``perplexity`` metrics are always relative (``ppl_c / ppl_r - 1``).
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0.5, 1), got {confidence!r}")
    ref = _as_array(reference, "reference")
    cand = _as_array(candidate, "candidate")
    if ref.size != cand.size:
        raise ValueError(f"paired scores need the same items: {ref.size} reference vs {cand.size} candidate")
    if ref.size == 0:
        raise ValueError("no items to compare")
    n = ref.size
    if method not in ("auto", "score", "exact", "bootstrap"):
        raise ValueError(f"method must be 'auto', 'score', 'exact' or 'bootstrap', got {method!r}")

    if aggregation == "perplexity":
        if method in ("exact", "score"):
            raise ValueError(f"the {method} method applies to 0/1 scores; perplexity needs 'bootstrap'")
        return _perplexity_degradation(
            ref,
            cand,
            reference_weights,
            candidate_weights,
            higher_is_better=higher_is_better,
            metric=metric,
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )

    if aggregation != "mean":
        raise ValueError(f"unknown aggregation {aggregation!r}")
    v_r, v_c = float(ref.mean()), float(cand.mean())
    diff = (ref - cand) if higher_is_better else (cand - ref)
    estimate = float(diff.mean())
    binary = _is_binary(ref, cand)
    chosen = method
    if method == "auto":
        chosen = "score" if binary else "bootstrap"
    if chosen in ("exact", "score") and not binary:
        raise ValueError(f"the {chosen} method applies to 0/1 scores only; use 'bootstrap'")
    worse = better = None
    if chosen in ("exact", "score"):
        bounds = _exact_bounds if chosen == "exact" else _tango_bounds
        lower, upper, worse, better = bounds(ref, cand, confidence)
        if not higher_is_better:
            lower, upper = -upper, -lower
            worse, better = better, worse
    else:
        lower, upper = _bootstrap_stats(lambda idx: diff[idx].mean(1), n, confidence, resamples, seed)
        if binary:
            worse = int(np.sum(diff > 0))
            better = int(np.sum(diff < 0))
    if relative:
        if v_r == 0:
            raise ValueError(
                "a relative budget needs a non-zero reference value; the reference scored 0 on these items"
            )
        scale = abs(v_r)
        estimate, lower, upper = estimate / scale, lower / scale, upper / scale
    return Degradation(estimate, lower, upper, confidence, n, relative, chosen, v_r, v_c, worse, better)


def _perplexity_degradation(
    ref: np.ndarray,
    cand: np.ndarray,
    reference_weights: Sequence[float] | None,
    candidate_weights: Sequence[float] | None,
    *,
    higher_is_better: bool,
    metric: str,
    confidence: float,
    resamples: int,
    seed: int,
) -> Degradation:
    """The relative change of a perplexity-type metric (``ppl_c / ppl_r - 1``), with bootstrap bounds."""
    n = ref.size
    w_r = np.ones(n) if reference_weights is None else _as_array(reference_weights, "reference_weights")
    w_c = np.ones(n) if candidate_weights is None else _as_array(candidate_weights, "candidate_weights")
    if w_r.size != n or w_c.size != n:
        raise ValueError("weights must have one entry per item")
    v_r = aggregate("perplexity", metric, ref, w_r)
    v_c = aggregate("perplexity", metric, cand, w_c)
    sign = 1.0 if not higher_is_better else -1.0

    def ratio(idx: np.ndarray) -> np.ndarray:
        lr = ref[idx].sum(1) / w_r[idx].sum(1)
        lc = cand[idx].sum(1) / w_c[idx].sum(1)
        if metric == "bits_per_byte":
            return sign * (lc / lr - 1.0)
        return sign * (np.exp(lc - lr) - 1.0)

    estimate = sign * (v_c / v_r - 1.0)
    lower, upper = _bootstrap_stats(ratio, n, confidence, resamples, seed)
    return Degradation(estimate, lower, upper, confidence, n, True, "bootstrap", v_r, v_c)


def required_items(limit: float, confidence: float, flip_rate: float = 0.10) -> int:
    """Items needed for a paired 0/1 comparison to resolve a loss of ``limit`` (absolute).

    A normal approximation for a model that changes its answer on ``flip_rate`` of
    the items and loses nothing on average: the one-sided bound sits
    ``z * sqrt(flip_rate / n)`` from the estimate, which must be below ``limit``.
    The default flip rate is a conservative figure for 8-bit/4-bit weight
    quantization of small models; a measured one (from the baseline run) is better.
    """
    if limit <= 0:
        return math.inf  # type: ignore[return-value]
    z = NormalDist().inv_cdf(confidence)
    return int(math.ceil((z * math.sqrt(flip_rate) / limit) ** 2))
