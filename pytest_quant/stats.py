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
two-sided interval). A gate passes on the upper bound, an alarm fails on the
lower one, so both must hold their rate (``tests/test_stats_coverage.py``).

Methods:

- ``score`` (0/1 scores): Tango's (1998) score bounds for a difference of paired
  proportions with a continuity correction of ``SCORE_CC_PER_Z * z`` answers.
  Tango's statistic treats the number of changed answers as random, so one flip
  among 150 items gives an upper bound near 3pp, not 0.7pp. Without the
  correction its one-sided bounds miss up to 9% of the time at a nominal 5%
  (exact enumeration: n = 150, 3% of answers changing); with it, the worst
  one-sided miss rate over n in {20, 50, 100, 150, 500}, flip rates 0.5-20% and
  every loss between -flip and +flip is 5.09% at 95% confidence, 1.08% at 99% and
  10.1% at 90% (exact enumeration, benchmarks/RESULTS.md). McNemar's conditional
  exact bounds, which an earlier version offered, miss up to 60% when most
  changes go one way and are no longer available.
- ``bootstrap-t`` (continuous scores, perplexity): a studentized bootstrap of the
  per-item loss contributions (seeded, so repeatable). For perplexity-type
  metrics the contributions are the linearised per-item log-likelihood
  differences of the log ratio of perplexities. Below ``MIN_CONTINUOUS_ITEMS``
  items the bounds are not trusted at all: the degradation says so, and no
  verdict can rest on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from pytest_quant.results import aggregate

# Continuity correction of the score bounds, in answers per unit of z (0.74 answers at 95%):
# the smallest multiple of z whose exact worst-case one-sided miss rate stays within 0.5pp of
# nominal at 90%, 95% and 99% over the enumerated grid (tests/test_stats_coverage.py).
SCORE_CC_PER_Z = 0.45
# Fewest items on which continuous (or perplexity) bounds are computed at all; see MIN_ITEMS_NOTE.
MIN_CONTINUOUS_ITEMS = 30
MIN_ITEMS_NOTE = (
    "bounds on a continuous metric (log-likelihoods, perplexity, scores that are not 0/1) need at least "
    f"{MIN_CONTINUOUS_ITEMS} items: with fewer, a few items with large losses are too often not among them, "
    "and no bound holds its rate (simulation, benchmarks/RESULTS.md)"
)
BOOTSTRAP_RESAMPLES = 10_000
METHODS = ("auto", "score", "bootstrap-t")


@dataclass(frozen=True)
class Degradation:
    """The estimated loss of a candidate against its reference and its one-sided bounds.

    ``spread``: the standard deviation of one item's contribution to the estimate, in the
    estimate's units (so ``spread / sqrt(n)`` is its standard error): what planning needs to
    say how many items would decide a budget. ``trusted`` is False when the bounds rest on too
    few items (``MIN_CONTINUOUS_ITEMS``): then they decide nothing.
    """

    estimate: float
    lower: float
    upper: float
    confidence: float
    n: int
    relative: bool
    method: str
    reference_value: float
    candidate_value: float
    higher_is_better: bool = True
    worse_items: int | None = None  # items right in the reference, wrong in the candidate
    better_items: int | None = None
    spread: float = math.nan
    trusted: bool = True

    @property
    def recovery(self) -> float:
        """The candidate's share of the reference's quality, oriented so that below 100% is always
        worse: ``cand / ref`` for higher-is-better metrics, ``ref / cand`` for lower-is-better
        ones (a perplexity 5% higher recovers 95.2%). NaN where undefined."""
        num, den = (
            (self.candidate_value, self.reference_value)
            if self.higher_is_better
            else (self.reference_value, self.candidate_value)
        )
        if den == 0 or not (math.isfinite(num) and math.isfinite(den)):
            return math.nan
        return num / den

    @property
    def flip_rate(self) -> float | None:
        """The share of items whose 0/1 score changed (either way), or None for other scores."""
        if self.worse_items is None or self.better_items is None or self.n == 0:
            return None
        return (self.worse_items + self.better_items) / self.n


def _as_array(x: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} has a non-finite score at item {bad}: {arr[bad]!r}")
    return arr


def _is_binary(*arrays: np.ndarray) -> bool:
    return all(bool(np.all((a == 0.0) | (a == 1.0))) for a in arrays)


# -- 0/1 scores: score bounds ------------------------------------------------------------------
def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    lp, lq = math.log(p), math.log1p(-p)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _solve(f: Any, target: float, increasing: bool) -> float:
    """Bisection for p in [0, 1] with f(p) == target, f monotone."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
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
    lower = 0.0 if successes == 0 else _solve(lambda p: 1.0 - _binom_cdf(successes - 1, trials, p), alpha, True)
    upper = 1.0 if successes == trials else _solve(lambda p: _binom_cdf(successes, trials, p), alpha, False)
    return lower, upper


def _score_z(worse: np.ndarray, better: np.ndarray, n: np.ndarray, delta: np.ndarray, shift: float) -> np.ndarray:
    """Tango's score statistic for a loss ``delta`` = P(worse) - P(better), its numerator moved by ``shift``."""
    a = 2 * n
    b = -worse - better + (2 * n - worse + better) * delta
    c = -better * delta * (1 - delta)
    p_better = np.maximum(0.0, (-b + np.sqrt(np.maximum(0.0, b * b - 4 * a * c))) / (2 * a))  # constrained MLE
    var = n * (2 * p_better + delta * (1 - delta))
    num = worse - better - n * delta + shift
    with np.errstate(divide="ignore", invalid="ignore"):
        z = num / np.sqrt(var)
    edge = np.where(num > 0, np.inf, np.where(num < 0, -np.inf, 0.0))  # no variance left: the sign decides
    return np.where(var > 0, z, edge)


def score_bounds(worse: Any, better: Any, n: Any, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided bounds (each at ``confidence``) on the loss P(worse) - P(better) of paired 0/1 scores.

    Vectorised over arrays of counts (the coverage tests enumerate every outcome through this
    very function). Each bound is the end of its bisection bracket on the conservative side.
    """
    w, b, m = (np.asarray(v, dtype=np.float64) for v in (worse, better, n))
    w, b, m = np.broadcast_arrays(w, b, m)
    z = NormalDist().inv_cdf(confidence)
    shift = SCORE_CC_PER_Z * z
    d = (w - b) / m
    lo, hi = np.minimum(d, 1.0), np.ones_like(d)
    for _ in range(64):  # upper: the loss at which the observed count sits at the lower z-tail
        mid = (lo + hi) / 2
        up = _score_z(w, b, m, mid, shift) > -z
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    upper = hi
    lo, hi = -np.ones_like(d), np.maximum(d, -1.0)
    for _ in range(64):
        mid = (lo + hi) / 2
        up = _score_z(w, b, m, mid, -shift) > z
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    return lo, upper


# -- continuous scores and perplexity: studentized bootstrap --------------------------------------
def studentized_bounds(
    contributions: np.ndarray, confidence: float, *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """One-sided bootstrap-t bounds (each at ``confidence``) on the mean of per-item ``contributions``.

    The pivot ``(mean* - mean) / se*`` is resampled (seeded), so skewness in the items moves the
    bounds the way it moves the mean's distribution; a percentile bootstrap ignores that and
    collapses onto the estimate when few items carry the loss.
    """
    x = np.asarray(contributions, dtype=np.float64)
    n = x.size
    mean, sd = float(x.mean()), float(x.std(ddof=1)) if n > 1 else 0.0
    se = sd / math.sqrt(n)
    if se == 0.0:
        return mean, mean
    rng = np.random.default_rng(seed)
    pivots = np.empty(resamples)
    done = 0
    while done < resamples:
        m = min(1024, resamples - done)
        sample = x[rng.integers(0, n, size=(m, n))]
        s_se = sample.std(axis=1, ddof=1) / math.sqrt(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            pivots[done : done + m] = np.where(s_se > 0, (sample.mean(axis=1) - mean) / s_se, 0.0)
        done += m
    q_lo, q_hi = np.quantile(pivots, [1.0 - confidence, confidence])
    return min(mean, mean - float(q_hi) * se), max(mean, mean - float(q_lo) * se)  # never excluding the estimate


def _perplexity_contributions(
    ref: np.ndarray, cand: np.ndarray, w_r: np.ndarray, w_c: np.ndarray, metric: str
) -> tuple[float, np.ndarray]:
    """The log ratio of the two perplexity-type values and each item's linearised contribution to it.

    For perplexity (``exp`` of the mean NLL per token / word / byte) the log ratio is the
    difference of the mean NLLs; for ``bits_per_byte`` (the mean NLL itself) the difference of
    their logs. A contribution is the item's influence on that statistic, so their mean is it.
    """
    mr, mc = float(ref.sum() / w_r.sum()), float(cand.sum() / w_c.sum())
    u_r = (ref - mr * w_r) / w_r.mean()
    u_c = (cand - mc * w_c) / w_c.mean()
    if metric == "bits_per_byte":
        phi = math.log(mc) - math.log(mr)
        return phi, phi + u_c / mc - u_r / mr
    phi = mc - mr
    return phi, phi + u_c - u_r


# -- the entry point -------------------------------------------------------------------------------
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
    seed: int = 0,
) -> Degradation:
    """Estimate the candidate's loss against the reference on the same (aligned) items.

    ``relative``: for ``mean`` metrics, the degradation is divided by the reference value on
    these items (a fixed number once the items are fixed); ``perplexity`` metrics are always
    relative (``ppl_c / ppl_r - 1``). Raises ValueError for inputs that cannot be compared.
    """
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0.5, 1), got {confidence!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    ref, cand = _as_array(reference, "reference"), _as_array(candidate, "candidate")
    if ref.size != cand.size:
        raise ValueError(f"paired scores need the same items: {ref.size} reference vs {cand.size} candidate")
    if ref.size == 0:
        raise ValueError("no items to compare")
    if aggregation == "perplexity":
        if method == "score":
            raise ValueError("the score method applies to 0/1 scores; perplexity needs 'bootstrap-t'")
        return _perplexity_degradation(
            ref, cand, reference_weights, candidate_weights, higher_is_better=higher_is_better, metric=metric,
            confidence=confidence, seed=seed,
        )  # fmt: skip
    if aggregation != "mean":
        raise ValueError(f"unknown aggregation {aggregation!r}")
    binary = _is_binary(ref, cand)
    chosen = ("score" if binary else "bootstrap-t") if method == "auto" else method
    if chosen == "score" and not binary:
        raise ValueError("the score method applies to 0/1 scores only; use 'bootstrap-t'")
    if chosen == "score":
        return _binary_degradation(ref, cand, higher_is_better, relative, confidence)
    return _continuous_degradation(ref, cand, higher_is_better, relative, confidence, seed, binary)


def _scale(relative: bool, v_r: float) -> float:
    if not relative:
        return 1.0
    if v_r == 0:
        raise ZeroDivisionError("a relative budget needs a non-zero reference value; the reference scored 0")
    return abs(v_r)


def _binary_degradation(
    ref: np.ndarray, cand: np.ndarray, higher_is_better: bool, relative: bool, confidence: float
) -> Degradation:
    n = ref.size
    v_r, v_c = float(ref.mean()), float(cand.mean())
    worse = int(np.sum((ref == 1.0) & (cand == 0.0)))
    better = int(np.sum((ref == 0.0) & (cand == 1.0)))
    if not higher_is_better:
        worse, better = better, worse
    lower, upper = (float(v) for v in score_bounds(worse, better, n, confidence))
    estimate = (worse - better) / n
    flips = (worse + better) / n
    spread = math.sqrt(max(flips - estimate**2, 0.0))
    s = _scale(relative, v_r)
    return Degradation(
        estimate / s, lower / s, upper / s, confidence, n, relative, "score", v_r, v_c, higher_is_better,
        worse, better, spread / s,
    )  # fmt: skip


def _continuous_degradation(
    ref: np.ndarray,
    cand: np.ndarray,
    higher_is_better: bool,
    relative: bool,
    confidence: float,
    seed: int,
    binary: bool,
) -> Degradation:
    n = ref.size
    v_r, v_c = float(ref.mean()), float(cand.mean())
    diff = (ref - cand) if higher_is_better else (cand - ref)
    lower, upper = studentized_bounds(diff, confidence, seed=seed)
    worse = int(np.sum(diff > 0)) if binary else None
    better = int(np.sum(diff < 0)) if binary else None
    s = _scale(relative, v_r)
    spread = float(diff.std(ddof=1)) if n > 1 else math.nan
    return Degradation(
        float(diff.mean()) / s, lower / s, upper / s, confidence, n, relative, "bootstrap-t", v_r, v_c,
        higher_is_better, worse, better, spread / s, trusted=n >= MIN_CONTINUOUS_ITEMS,
    )  # fmt: skip


def _perplexity_degradation(
    ref: np.ndarray,
    cand: np.ndarray,
    reference_weights: Sequence[float] | None,
    candidate_weights: Sequence[float] | None,
    *,
    higher_is_better: bool,
    metric: str,
    confidence: float,
    seed: int,
) -> Degradation:
    """The relative change of a perplexity-type metric (``ppl_c / ppl_r - 1``), bootstrap-t bounds on its log."""
    n = ref.size
    w_r = np.ones(n) if reference_weights is None else _as_array(reference_weights, "reference_weights")
    w_c = np.ones(n) if candidate_weights is None else _as_array(candidate_weights, "candidate_weights")
    if w_r.size != n or w_c.size != n:
        raise ValueError("weights must have one entry per item")
    if np.any(w_r <= 0) or np.any(w_c <= 0):
        raise ValueError("every item needs a positive weight (tokens, words or bytes)")
    v_r = aggregate("perplexity", metric, ref, w_r)
    v_c = aggregate("perplexity", metric, cand, w_c)
    phi, contributions = _perplexity_contributions(ref, cand, w_r, w_c, metric)
    lo, hi = studentized_bounds(contributions, confidence, seed=seed)
    sign = -1.0 if higher_is_better else 1.0
    estimate = sign * (math.exp(phi) - 1.0)  # = sign * (v_c / v_r - 1)
    ends = sorted((sign * (math.exp(lo) - 1.0), sign * (math.exp(hi) - 1.0)))
    bounds = (min(ends[0], estimate), max(ends[1], estimate))
    spread = math.exp(phi) * float(contributions.std(ddof=1)) if n > 1 else math.nan
    return Degradation(
        estimate, bounds[0], bounds[1], confidence, n, True, "bootstrap-t", v_r, v_c,
        higher_is_better, spread=spread, trusted=n >= MIN_CONTINUOUS_ITEMS,
    )  # fmt: skip


# -- a family of alarms ----------------------------------------------------------------------------------
def holm_rejections(rejects_at: Mapping[str, Callable[[float], bool]]) -> dict[str, int]:
    """Holm's (1979) step-down procedure over hypotheses given as tests: ``rejects_at[name](share)`` says
    whether ``name``'s test rejects at ``share`` of its error rate ``alpha`` (monotone: a larger share
    rejects at least as much). Returns the rejected names with the step (1-based) that rejected them.

    Step ``r + 1`` tests what is still open at ``alpha / (m - r)`` (share ``1 / (m - r)``), ``r`` the
    number rejected so far, and stops at the first step that rejects nothing. Rejecting every open
    hypothesis whose test passes at a step is Holm's procedure on their p-values (each is at most the
    step's level, which only grows). The chance of rejecting any true hypothesis is at most ``alpha``
    (the largest, when they differ), whatever their dependence."""
    m = len(rejects_at)
    rejected: dict[str, int] = {}
    while len(rejected) < m:
        share = 1.0 / (m - len(rejected))
        new = [name for name, test in rejects_at.items() if name not in rejected and test(share)]
        if not new:
            break
        step = len(rejected) + 1
        rejected.update(dict.fromkeys(new, step))
    return rejected


# -- planning ---------------------------------------------------------------------------------------
def required_items(limit: float, confidence: float, flip_rate: float = 0.10, power: float = 0.80) -> float:
    """Items a paired 0/1 comparison needs to decide a budget of ``limit`` (absolute) with ``power``.

    A normal approximation for a model that changes its answer on ``flip_rate`` of the items:
    with a true loss of 0 the gate's upper bound must fall below ``limit`` (and with a true
    loss of ``2 * limit`` the alarm's lower bound above it) in ``power`` of the runs, so
    ``n >= ((z_conf + z_power) * sqrt(flip_rate) / limit) ** 2``. Infinite for ``limit <= 0``.
    """
    if limit <= 0:
        return math.inf
    z = NormalDist().inv_cdf(confidence) + NormalDist().inv_cdf(power)
    return float(math.ceil((z * math.sqrt(flip_rate) / limit) ** 2))


def items_to_decide(deg: Degradation, limit: float) -> float:
    """Items that would decide a budget of ``limit`` (in the degradation's units) if the loss and the
    per-item spread stay as measured: within when the estimate is below the limit, violated when
    above. Infinite when the estimate sits on the limit or nothing varies."""
    gap = abs(deg.estimate - limit)
    if gap == 0 or not math.isfinite(deg.spread) or deg.spread <= 0 and deg.flip_rate is None:
        return math.inf
    z = NormalDist().inv_cdf(deg.confidence)
    if deg.worse_items is not None and deg.method == "score":
        return _score_items_to_decide(deg, limit)
    return float(max(deg.n + 1, math.ceil((z * deg.spread / gap) ** 2)))


def _score_items_to_decide(deg: Degradation, limit: float) -> float:
    """The smallest n at which the score bounds, with the counts scaled up from the measured ones, decide."""
    assert deg.worse_items is not None and deg.better_items is not None
    scale = abs(deg.reference_value) if deg.relative and deg.reference_value else 1.0
    target = limit * scale
    p_w, p_b = deg.worse_items / deg.n, deg.better_items / deg.n
    if p_w + p_b == 0:
        p_w = p_b = 0.5 / deg.n  # nothing changed: assume half an answer each way per n items measured
    within = deg.estimate < limit

    def decides(m: float) -> bool:
        lo, hi = score_bounds(p_w * m, p_b * m, m, deg.confidence)
        return bool(hi <= target) if within else bool(lo > target)

    lo_n, hi_n = float(deg.n), float(deg.n)
    while not decides(hi_n):
        lo_n, hi_n = hi_n, hi_n * 2
        if hi_n > 1e9:
            return math.inf
    while hi_n - lo_n > 1:
        mid = math.floor((lo_n + hi_n) / 2)
        lo_n, hi_n = (lo_n, mid) if decides(mid) else (mid, hi_n)
    return float(max(hi_n, deg.n + 1))


# -- pooled 0/1 scores -------------------------------------------------------------------------------
def _constrained_better(w: np.ndarray, b: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Tango's maximum-likelihood P(better) of a task given its loss d."""
    a2 = 2 * n
    bb = -w - b + (2 * n - w + b) * d
    c = -b * d * (1 - d)
    return np.maximum(0.0, (-bb + np.sqrt(np.maximum(0.0, bb * bb - 4 * a2 * c))) / (2 * a2))


def pooled_score_bounds(
    worse: Any, better: Any, n: Any, weights: Any, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """One-sided bounds (each at ``confidence``) on a weighted sum ``sum_t a_t (P_t(worse) - P_t(better))``
    of the losses of several tasks' paired 0/1 scores (a pooled budget).

    Counts are arrays whose last axis is the task (vectorised over leading axes, as the coverage
    simulation uses it). A stratified score statistic: under a pooled loss delta each task's loss is
    its estimate shifted by the same amount (``delta - D``), its P(better) is Tango's constrained
    estimate there, and the variance ``sum_t a_t^2 (2 q_t + d_t - d_t^2) / n_t`` is taken at that
    point, so few changed answers still leave width. The continuity correction is
    ``SCORE_CC_PER_Z * z`` items of the task whose items weigh most. With one task it is
    :func:`score_bounds`. Error rates by simulation in tests/test_stats_coverage.py.
    """
    w, b, m = (np.asarray(v, dtype=np.float64) for v in (worse, better, n))
    a = np.asarray(weights, dtype=np.float64)
    z = NormalDist().inv_cdf(confidence)
    shift = SCORE_CC_PER_Z * z * float(np.max(a / m))
    est = np.sum(a * (w - b) / m, axis=-1)

    def stat(delta: np.ndarray, sh: float) -> np.ndarray:
        d = np.clip((w - b) / m + (delta - est)[..., None], -1.0, 1.0)
        var = np.sum(a * a * np.maximum(2 * _constrained_better(w, b, m, d) + d - d * d, 0.0) / m, axis=-1)
        num = est - delta + sh
        with np.errstate(divide="ignore", invalid="ignore"):
            zz = num / np.sqrt(var)
        return np.where(var > 0, zz, np.where(num > 0, np.inf, np.where(num < 0, -np.inf, 0.0)))

    lo, hi = np.minimum(est, 1.0), np.ones_like(est)
    for _ in range(64):
        mid = (lo + hi) / 2
        up = stat(mid, shift) > -z
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    upper = hi
    lo, hi = -np.ones_like(est), np.maximum(est, -1.0)
    for _ in range(64):
        mid = (lo + hi) / 2
        up = stat(mid, -shift) > z
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    return lo, upper
