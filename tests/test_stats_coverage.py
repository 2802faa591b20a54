"""Error rates of the 0/1 score bounds, by exact enumeration.

For paired 0/1 scores the outcome of n items is the multinomial count (worse, better, same):
every outcome of every n on the grid is enumerated, its bounds computed by the production
function (``stats.score_bounds``, vectorised over all outcomes), and the probability of each
kind of error summed exactly under each true (flip rate, loss):

- a gate passes wrongly when the true loss is at (or beyond) its budget and the upper bound is
  at or below the budget: P(upper <= true loss);
- an alarm fails wrongly when the true loss is at (or within) its budget and the lower bound is
  above it: P(lower > true loss).

Both must stay within 1 - confidence, to a tolerance of 0.5 percentage points, at every point
of the grid: n in {20, 50, 100, 150, 500}, flip rates 1-20%, true losses from -flip to +flip
(all changed answers losses).
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_quant.stats import Degradation, score_bounds
from pytest_quant.verdict import decide

scipy_special = pytest.importorskip("scipy.special", reason="scipy's gammaln gives the exact multinomial pmf")

NS = (20, 50, 100, 150, 500)
FLIP_RATES = (0.01, 0.02, 0.03, 0.05, 0.075, 0.10, 0.15, 0.20)
TOLERANCE = 0.005
_EPS = 1e-12


def _outcomes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (worse, better) count of n paired items, as float arrays."""
    w, b = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = w + b <= n
    return w[keep].astype(float), b[keep].astype(float)


def _pmf(w: np.ndarray, b: np.ndarray, n: int, p_worse: float, p_better: float) -> np.ndarray:
    same = n - w - b
    log = scipy_special.gammaln(n + 1) - scipy_special.gammaln(w + 1) - scipy_special.gammaln(b + 1)
    log = log - scipy_special.gammaln(same + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        for count, p in ((w, p_worse), (b, p_better), (same, 1.0 - p_worse - p_better)):
            log = log + np.where(count > 0, count * np.log(p) if p > 0 else -np.inf, 0.0)
    return np.exp(log)


def _worst_error_rates(n: int, confidence: float) -> tuple[float, float, tuple, tuple]:
    """The largest gate false-pass and alarm false-alarm probabilities over the grid, and where."""
    w, b = _outcomes(n)
    lower, upper = score_bounds(w, b, n, confidence)
    worst_pass = worst_alarm = 0.0
    at_pass = at_alarm = ()
    for flip in FLIP_RATES:
        for share in np.linspace(-1.0, 1.0, 21):
            loss = share * flip
            pmf = _pmf(w, b, n, (flip + loss) / 2, (flip - loss) / 2)
            false_pass = float(pmf[upper <= loss + _EPS].sum())
            false_alarm = float(pmf[lower > loss + _EPS].sum())
            if false_pass > worst_pass:
                worst_pass, at_pass = false_pass, (flip, round(loss, 4))
            if false_alarm > worst_alarm:
                worst_alarm, at_alarm = false_alarm, (flip, round(loss, 4))
    return worst_pass, worst_alarm, at_pass, at_alarm


@pytest.mark.parametrize("n", NS)
def test_gate_false_pass_and_alarm_false_alarm_hold_at_95_percent(n: int) -> None:
    false_pass, false_alarm, at_pass, at_alarm = _worst_error_rates(n, 0.95)
    assert false_pass <= 0.05 + TOLERANCE, f"n={n}: a gate passes wrongly {false_pass:.2%} of the time at {at_pass}"
    assert false_alarm <= 0.05 + TOLERANCE, f"n={n}: an alarm fails wrongly {false_alarm:.2%} at {at_alarm}"


@pytest.mark.parametrize("confidence", [0.90, 0.99])
@pytest.mark.parametrize("n", [50, 150])
def test_error_rates_hold_at_other_confidences(n: int, confidence: float) -> None:
    false_pass, false_alarm, at_pass, at_alarm = _worst_error_rates(n, confidence)
    alpha = 1 - confidence
    assert false_pass <= alpha + TOLERANCE, f"n={n}, c={confidence}: false pass {false_pass:.2%} at {at_pass}"
    assert false_alarm <= alpha + TOLERANCE, f"n={n}, c={confidence}: false alarm {false_alarm:.2%} at {at_alarm}"


def test_without_the_continuity_correction_the_rates_do_not_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: plain Tango bounds (correction 0) miss up to ~9% at a nominal 5% (n = 150)."""
    from pytest_quant import stats

    monkeypatch.setattr(stats, "SCORE_CC_PER_Z", 0.0)
    false_pass, false_alarm, _, _ = _worst_error_rates(150, 0.95)
    assert false_pass > 0.08 and false_alarm > 0.08


def test_decide_uses_the_same_bounds_and_the_boundary_counts_as_a_pass_for_the_gate() -> None:
    """The enumeration's notion of an error is decide()'s: gate passes iff upper <= budget, alarm
    fails iff lower > budget."""
    n, w, b = 150, 9, 3
    lo, hi = (float(v) for v in score_bounds(w, b, n, 0.95))
    est = (w - b) / n
    deg = Degradation(est, lo, hi, 0.95, n, False, "score", 0.6, 0.6 - est, True, w, b, 0.2)
    assert decide(deg, hi, "gate").passed and not decide(deg, hi - 1e-9, "gate").passed
    assert decide(deg, lo, "alarm").passed and not decide(deg, lo - 1e-9, "alarm").passed
    assert decide(deg, hi, "gate").evidence == "within" and decide(deg, lo - 1e-9, "alarm").evidence == "violated"


# -- pooled budgets: simulation (the outcome space of several tasks is too large to enumerate) ------
POOLS = {  # task sizes and flip rates: the Open LLM Leaderboard v1 sizes; small unequal pools; few flips
    "leaderboard": ([1172, 10042, 14042, 1267, 817, 1319], [0.03, 0.02, 0.04, 0.03, 0.05, 0.10]),
    "unequal": ([50, 500, 200], [0.10, 0.02, 0.05]),
    "lopsided": ([30, 1000], [0.20, 0.01]),
    "few-flips": ([200, 200, 200, 200], [0.01, 0.01, 0.01, 0.01]),
}
REPLICATES = 20_000
MC_SE = (0.05 * 0.95 / REPLICATES) ** 0.5  # 0.15pp: the Monte-Carlo standard error of a 5% rate


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_pooled_bounds_hold_their_rates_by_simulation(pool: str) -> None:
    """Macro-weighted pooled losses, true loss at the budget, all losses one way, mixed or none: the
    false-pass and false-alarm rates stay within 5% + 0.5pp + 3 Monte-Carlo standard errors."""
    from pytest_quant.stats import pooled_score_bounds

    sizes, flips = (np.asarray(v, dtype=float) for v in POOLS[pool])
    rng = np.random.default_rng(2024)
    weights = np.full(sizes.size, 1 / sizes.size)
    patterns = [np.full(sizes.size, s) for s in (-1.0, -0.5, 0.0, 0.5, 1.0)]
    patterns.append(np.where(np.arange(sizes.size) % 2 == 0, 1.0, -1.0))
    for shares in patterns:
        loss = shares * flips
        p_worse, p_better = (flips + loss) / 2, (flips - loss) / 2
        truth = float(np.sum(weights * loss))
        worse = rng.binomial(sizes.astype(int), p_worse, size=(REPLICATES, sizes.size)).astype(float)
        better = rng.binomial((sizes - worse).astype(int), p_better / (1 - p_worse)).astype(float)
        lower, upper = pooled_score_bounds(worse, better, sizes, weights, 0.95)
        false_pass, false_alarm = float(np.mean(upper <= truth + _EPS)), float(np.mean(lower > truth + _EPS))
        limit = 0.05 + TOLERANCE + 3 * MC_SE
        assert false_pass <= limit, f"{pool} {shares}: false pass {false_pass:.2%}"
        assert false_alarm <= limit, f"{pool} {shares}: false alarm {false_alarm:.2%}"


def test_pooled_bounds_of_one_task_are_the_score_bounds() -> None:
    from pytest_quant.stats import pooled_score_bounds

    for w, b, n in [(6, 4, 100), (0, 0, 50), (15, 2, 150)]:
        pooled = pooled_score_bounds([w], [b], [n], [1.0], 0.95)
        single = score_bounds(w, b, n, 0.95)
        assert np.allclose(pooled, single, atol=1e-12)
