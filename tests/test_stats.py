"""Paired statistics: score bounds, bootstrap-t, decision modes and evidence, sample-size rules."""

import math

import numpy as np
import pytest

from pytest_quant.errors import ResultError
from pytest_quant.stats import (
    MIN_CONTINUOUS_ITEMS,
    Degradation,
    clopper_pearson,
    items_to_decide,
    paired_degradation,
    required_items,
)
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


def test_a_single_changed_answer_still_leaves_room_for_loss():
    ref, cand = _pairs(50, 9, 1, 0)  # a single changed answer
    score = paired_degradation(ref, cand, higher_is_better=True)
    assert score.upper > 3 * score.estimate


def test_retired_methods_are_refused():
    ref, cand = _pairs(50, 9, 1, 0)
    for method in ("exact", "bootstrap"):
        with pytest.raises(ValueError, match="method must be one of"):
            paired_degradation(ref, cand, higher_is_better=True, method=method)


def test_no_discordant_pairs_still_has_width():
    ref = [1, 0] * 50
    d = paired_degradation(ref, ref, higher_is_better=True, confidence=0.95)
    assert d.estimate == 0.0
    assert 0.02 < d.upper < 0.045 and d.lower == pytest.approx(-d.upper)


def test_bootstrap_t_is_seeded_and_agrees_with_the_score_bounds_roughly_on_many_items():
    ref, cand = _pairs(300, 100, 60, 40)
    a = paired_degradation(ref, cand, higher_is_better=True, method="bootstrap-t", seed=3)
    assert a.method == "bootstrap-t"
    b = paired_degradation(ref, cand, higher_is_better=True, method="bootstrap-t", seed=3)
    s = paired_degradation(ref, cand, higher_is_better=True)
    assert (a.lower, a.upper) == (b.lower, b.upper)
    assert a.upper == pytest.approx(s.upper, abs=0.01)
    assert a.lower == pytest.approx(s.lower, abs=0.01)


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
    assert d.relative and d.method == "bootstrap-t" and d.trusted
    assert d.recovery == pytest.approx(1 / math.exp(0.05))  # oriented: a worse perplexity recovers less than 100%


def test_refuses_non_finite_and_mismatched():
    with pytest.raises(ValueError, match="non-finite"):
        paired_degradation([1.0, float("nan")], [1.0, 1.0], higher_is_better=True)
    with pytest.raises(ValueError, match="same items"):
        paired_degradation([1.0, 0.0], [1.0], higher_is_better=True)
    with pytest.raises(ValueError, match="0/1"):
        paired_degradation([0.5, 0.2], [0.4, 0.1], higher_is_better=True, method="score")


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


def test_required_items_grows_as_budget_shrinks_and_includes_power():
    assert required_items(0.01, 0.95) > required_items(0.02, 0.95) > 0
    n = required_items(0.01, 0.95, flip_rate=0.1)
    assert 6100 < n < 6250  # ((1.645 + 0.842) * sqrt(.1) / .01)^2 = 6183 at 80% power
    assert required_items(0.01, 0.95, flip_rate=0.1, power=0.5) == pytest.approx(2706, abs=1)  # z_beta = 0
    assert required_items(0.0, 0.95) == math.inf


# -- issue 12: no regression passes unseen ---------------------------------------------------------
@pytest.mark.parametrize("field", ["estimate", "lower", "upper"])
def test_non_finite_statistics_never_pass_in_any_mode(field: str):
    values = {"estimate": 0.0, "lower": -0.01, "upper": 0.01}
    values[field] = math.nan
    deg = Degradation(values["estimate"], values["lower"], values["upper"], 0.95, 100, False, "bootstrap-t", 0.5, 0.5)
    for mode in ("point", "alarm", "gate"):
        with pytest.raises(ResultError, match="cannot be judged"):
            decide(deg, 0.02, mode)


def test_zero_weights_are_refused_not_divided():
    with pytest.raises(ValueError, match="positive weight"):
        paired_degradation([1.0, 2.0], [1.0, 2.5], higher_is_better=False, aggregation="perplexity",
                           reference_weights=[0.0, 1.0], candidate_weights=[0.0, 1.0])


@pytest.mark.parametrize("n", [1, 2, 3, 5, MIN_CONTINUOUS_ITEMS - 1])
def test_few_continuous_items_decide_nothing(n: int):
    """A perplexity difference measured on a handful of windows: whatever the bounds say, a gate does not
    pass and an alarm does not fail; the reason names the minimum."""
    rng = np.random.default_rng(n)
    ref = rng.uniform(1, 5, n)
    cand = ref * 1.001  # a tiny loss the gate would happily "prove" on n items
    deg = paired_degradation(ref, cand, higher_is_better=False, aggregation="perplexity", metric="perplexity")
    assert not deg.trusted
    gate = decide(deg, 0.05, "gate")
    assert not gate.passed and gate.evidence == "inconclusive"
    assert f"at least {MIN_CONTINUOUS_ITEMS} items" in gate.evidence_line
    worse = paired_degradation(ref, ref * 3.0, higher_is_better=False, aggregation="perplexity", metric="perplexity")
    assert decide(worse, 0.05, "alarm").passed  # not trusted either way: no false alarm on few items
    many = paired_degradation(np.tile(ref, 40), np.tile(cand, 40), higher_is_better=False, aggregation="perplexity",
                              metric="perplexity")
    assert many.trusted and decide(many, 0.05, "gate").passed


def test_evidence_is_three_valued_and_gate_failures_say_which():
    within = paired_degradation(*_pairs(7000, 2900, 60, 40), higher_is_better=True)
    violated = paired_degradation(*_pairs(50, 20, 28, 2), higher_is_better=True)
    unclear = paired_degradation(*_pairs(70, 20, 6, 4), higher_is_better=True)
    assert decide(within, 0.01, "gate").evidence == "within"
    gate_violated = decide(violated, 0.03, "gate")
    assert gate_violated.evidence == "violated" and "exceeds the budget with confidence" in gate_violated.reason
    assert "cannot show" not in gate_violated.reason
    gate_unclear = decide(unclear, 0.03, "gate")
    assert gate_unclear.evidence == "inconclusive" and "cannot show the loss is within budget" in gate_unclear.reason
    assert gate_unclear.items_needed is not None and gate_unclear.items_needed > unclear.n
    alarm_unclear = decide(unclear, 0.03, "alarm")
    assert alarm_unclear.passed and alarm_unclear.evidence == "inconclusive"
    assert "no violation shown" in alarm_unclear.evidence_line


def test_items_needed_decide_at_the_measured_flip_rate():
    """Scaling the measured counts to the number of items said makes the bounds decide (one item fewer does not)."""
    from pytest_quant.stats import score_bounds

    d = paired_degradation(*_pairs(70, 20, 6, 4), higher_is_better=True)
    need = items_to_decide(d, 0.03)
    _, hi = score_bounds(0.06 * need, 0.04 * need, need, 0.95)
    assert hi <= 0.03
    _, hi = score_bounds(0.06 * (need - 1), 0.04 * (need - 1), need - 1, 0.95)
    assert hi > 0.03
    assert items_to_decide(d, d.estimate) == math.inf
