"""Paired statistics: exact bounds, bootstrap, decision modes, sample-size rule."""

import math

import numpy as np
import pytest

from pytest_quant.stats import clopper_pearson, paired_degradation, required_items
from pytest_quant.verdict import decide


def test_clopper_pearson_matches_scipy_beta():
    scipy_stats = pytest.importorskip("scipy.stats", reason="scipy is the oracle for Clopper-Pearson")
    for k, n, c in [(0, 10, 0.95), (3, 10, 0.95), (10, 10, 0.9), (17, 40, 0.975), (250, 500, 0.95)]:
        lo, hi = clopper_pearson(k, n, c)
        a = 1 - c
        want_lo = 0.0 if k == 0 else scipy_stats.beta.ppf(a, k, n - k + 1)
        want_hi = 1.0 if k == n else scipy_stats.beta.ppf(c, k + 1, n - k)
        assert lo == pytest.approx(want_lo, abs=1e-9)
        assert hi == pytest.approx(want_hi, abs=1e-9)


def _pairs(n_same_right, n_same_wrong, n_worse, n_better):
    ref = [1] * n_same_right + [0] * n_same_wrong + [1] * n_worse + [0] * n_better
    cand = [1] * n_same_right + [0] * n_same_wrong + [0] * n_worse + [1] * n_better
    return ref, cand


def test_exact_estimate_and_bounds_bracket_it():
    ref, cand = _pairs(60, 20, 15, 5)  # loses 10 of 100 net
    d = paired_degradation(ref, cand, higher_is_better=True)
    assert d.method == "score"
    assert d.estimate == pytest.approx(0.10)
    assert d.lower < d.estimate < d.upper
    assert (d.worse_items, d.better_items) == (15, 5)
    assert d.reference_value == pytest.approx(0.75) and d.candidate_value == pytest.approx(0.65)


def test_pairing_is_tighter_than_ignoring_it():
    """Same marginals, but concordant pairs: the paired bounds shrink with fewer flips."""
    few_flips = paired_degradation(*_pairs(70, 26, 3, 1), higher_is_better=True)
    many_flips = paired_degradation(*_pairs(40, 6, 33, 21), higher_is_better=True)
    assert few_flips.upper - few_flips.lower < many_flips.upper - many_flips.lower


def test_conditional_exact_is_too_tight_with_few_flips_score_is_not():
    ref, cand = _pairs(50, 9, 1, 0)  # a single changed answer
    exact = paired_degradation(ref, cand, higher_is_better=True, method="exact")
    score = paired_degradation(ref, cand, higher_is_better=True)
    assert exact.upper == pytest.approx(exact.estimate)  # conditional on n_d = 1 it cannot see more loss
    assert score.upper > 3 * score.estimate


@pytest.mark.parametrize("p_worse,p_better", [(0.05, 0.02), (0.10, 0.10), (0.02, 0.0), (0.15, 0.05), (0.005, 0.0)])
def test_upper_bound_keeps_its_coverage(p_worse, p_better):
    """Simulated paired runs: the 95% upper bound (what a gate uses) covers the true loss >= ~95% of the time;
    the lower bound (what an alarm uses) stays above 90% even when only losses occur."""
    rng = np.random.default_rng(12345)
    n, sims, true = 150, 800, p_worse - p_better
    over = under = 0
    for _ in range(sims):
        u = rng.random(n)
        ref = (rng.random(n) < 0.6).astype(float)
        cand = ref.copy()
        cand[(ref == 1) & (u < p_worse / 0.6)] = 0.0
        cand[(ref == 0) & (u < p_better / 0.4)] = 1.0
        d = paired_degradation(ref, cand, higher_is_better=True)
        over += d.upper >= true - 1e-12
        under += d.lower <= true + 1e-12
    assert over / sims >= 0.925 and under / sims >= 0.89  # 0.95 less ~2.5 simulation standard errors


def test_no_discordant_pairs_still_has_width():
    ref = [1, 0] * 50
    d = paired_degradation(ref, ref, higher_is_better=True, confidence=0.95)
    assert d.estimate == 0.0
    assert 0.02 < d.upper < 0.035 and d.lower == pytest.approx(-d.upper)
    e = paired_degradation(ref, ref, higher_is_better=True, method="exact")
    assert e.upper == pytest.approx(1 - 0.05 ** (1 / 100))  # rule of three


def test_bootstrap_is_seeded_and_agrees_with_exact_roughly():
    ref, cand = _pairs(300, 100, 60, 40)
    a = paired_degradation(ref, cand, higher_is_better=True, method="bootstrap", seed=3)
    assert a.method == "bootstrap"
    b = paired_degradation(ref, cand, higher_is_better=True, method="bootstrap", seed=3)
    e = paired_degradation(ref, cand, higher_is_better=True, method="exact")
    assert (a.lower, a.upper) == (b.lower, b.upper)
    assert a.upper == pytest.approx(e.upper, abs=0.01)
    assert a.lower == pytest.approx(e.lower, abs=0.01)


def test_relative_divides_by_reference_on_same_items():
    ref, cand = _pairs(40, 50, 10, 0)  # ref 0.5, cand 0.4
    d = paired_degradation(ref, cand, higher_is_better=True, relative=True)
    assert d.estimate == pytest.approx(0.2)
    assert d.relative


def test_lower_is_better_flips_orientation():
    ref = [0.0] * 50 + [1.0] * 50
    cand = [1.0] * 60 + [0.0] * 40  # error rate rose
    d = paired_degradation(ref, cand, higher_is_better=False)
    assert d.estimate == pytest.approx(0.1)


def test_perplexity_relative_increase_and_bounds():
    rng = np.random.default_rng(0)
    tokens = rng.integers(50, 100, size=40).astype(float)
    nll_ref = tokens * 3.0 + rng.normal(0, 1, size=40)
    nll_cand = nll_ref + tokens * 0.05  # +0.05 nats/token: ppl x e^0.05
    d = paired_degradation(nll_ref, nll_cand, higher_is_better=False, aggregation="perplexity",
                           reference_weights=tokens, candidate_weights=tokens)
    assert d.estimate == pytest.approx(math.exp(0.05) - 1, rel=1e-9)
    assert d.lower <= d.estimate <= d.upper
    assert d.relative and d.method == "bootstrap"


def test_refuses_non_finite_and_mismatched():
    with pytest.raises(ValueError, match="non-finite"):
        paired_degradation([1.0, float("nan")], [1.0, 1.0], higher_is_better=True)
    with pytest.raises(ValueError, match="same items"):
        paired_degradation([1.0, 0.0], [1.0], higher_is_better=True)
    with pytest.raises(ValueError, match="0/1"):
        paired_degradation([0.5, 0.2], [0.4, 0.1], higher_is_better=True, method="exact")


def test_modes_differ_where_they_should():
    # A small sample, estimated loss 2pp, budget 3pp: point passes; gate cannot show it; alarm quiet.
    ref, cand = _pairs(70, 20, 6, 4)
    d = paired_degradation(ref, cand, higher_is_better=True)
    assert d.estimate == pytest.approx(0.02)
    assert decide(d, 0.03, "point").passed
    assert decide(d, 0.03, "alarm").passed
    assert not decide(d, 0.03, "gate").passed
    # A clear large loss: even alarm fires.
    big = paired_degradation(*_pairs(50, 20, 28, 2), higher_is_better=True)
    assert not decide(big, 0.03, "alarm").passed
    # A clear small loss with many items: gate passes.
    many = paired_degradation(*_pairs(7000, 2900, 60, 40), higher_is_better=True)
    assert decide(many, 0.01, "gate").passed
    with pytest.raises(ValueError):
        decide(d, 0.03, "strict")  # type: ignore[arg-type]


def test_recovery_above_one_is_not_a_violation():
    ref, cand = _pairs(50, 40, 0, 10)
    d = paired_degradation(ref, cand, higher_is_better=True, relative=True)
    assert d.recovery > 1
    for mode in ("point", "alarm", "gate"):
        assert decide(d, 0.01, mode).passed


def test_required_items_grows_as_budget_shrinks():
    assert required_items(0.01, 0.95) > required_items(0.02, 0.95) > 0
    n = required_items(0.01, 0.95, flip_rate=0.1)
    assert 2600 < n < 2800  # (1.645 * sqrt(.1) / .01)^2 = 2706
    assert required_items(0.0, 0.95) == math.inf
