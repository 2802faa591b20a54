"""Answer flips (Dutta et al. 2024, "Accuracy is Not All You Need"): the share of items whose 0/1 score
changed either way, as a budget (``max_flips``) and as a line in every 0/1 comparison.

The bounds are exact one-sided Clopper-Pearson bounds on the count of changed items; their error rates
at the budget's boundary are checked here by exact enumeration of the binomial distribution.
"""

from __future__ import annotations

import math

import pytest

from pytest_quant.budget import parse_threshold
from pytest_quant.config import BudgetConfig
from pytest_quant.errors import QuantConfigError, ResultError
from pytest_quant.results import TaskResult
from pytest_quant.stats import clopper_pearson
from pytest_quant.suite import load_suite_text
from pytest_quant.verdict import judge, judge_flips


def _result(scores, *, metric="acc") -> TaskResult:
    ids = tuple(str(i) for i in range(len(scores)))
    return TaskResult("arc", metric, sum(scores) / len(scores), True, "mean", ids, tuple(float(s) for s in scores),
                      fingerprint="f")


def _pair(n: int, worse: int, better: int, right: float = 0.5):
    """A reference and a candidate on n items: ``worse`` answers lost, ``better`` gained."""
    base = [1.0] * int(n * right) + [0.0] * (n - int(n * right))
    cand = list(base)
    ones = [i for i, v in enumerate(base) if v == 1.0]
    zeros = [i for i, v in enumerate(base) if v == 0.0]
    for i in ones[:worse]:
        cand[i] = 0.0
    for i in zeros[:better]:
        cand[i] = 1.0
    return _result(base), _result(cand)


def test_equal_accuracy_can_hide_many_flips():
    base, cand = _pair(400, 40, 40)  # accuracy unchanged, 20% of answers changed
    assert base.value == cand.value
    loss = judge(base, cand, threshold=parse_threshold("1pp"), mode="alarm", confidence=0.95)
    assert loss.passed  # the accuracy budget sees nothing ...
    assert "flips: 80 of 400 items changed answer (20.0%; 40 worse, 40 better)" in loss.explanation
    assert loss.row["flips"] == pytest.approx(0.2) and loss.row["flips_low"] < 0.2 < loss.row["flips_high"]
    for mode in ("alarm", "gate", "point"):  # ... a 5% flip budget does
        out = judge_flips(base, cand, limit=0.05, mode=mode, confidence=0.95)
        assert not out.passed and out.verdict.evidence == "violated"
    assert "more answers flip than allowed, with confidence" in judge_flips(
        base, cand, limit=0.05, mode="alarm", confidence=0.95).explanation


def test_flip_verdicts_by_mode_and_evidence():
    base, cand = _pair(1000, 10, 10)  # 2% flipped
    gate = judge_flips(base, cand, limit=0.05, mode="gate", confidence=0.95)
    assert gate.passed and gate.verdict.evidence == "within" and gate.row["ci_high"] < 0.05
    few_base, few_cand = _pair(40, 1, 0)  # 2.5% flipped on 40 items: the bound reaches 11%
    few = judge_flips(few_base, few_cand, limit=0.05, mode="gate", confidence=0.95)
    assert not few.passed and few.verdict.evidence == "inconclusive" and "cannot show" in few.explanation
    assert judge_flips(few_base, few_cand, limit=0.05, mode="alarm", confidence=0.95).passed


def test_flips_need_0_1_scores_and_a_share():
    cont = _result([0.2, 0.7, 0.9])
    with pytest.raises(ResultError, match="not scored 0/1 per item"):
        judge_flips(cont, _result([0.2, 0.6, 0.9]), limit=0.05, mode="alarm", confidence=0.95)
    BudgetConfig.model_validate({"max_flips": "5%"})
    with pytest.raises(ValueError, match="a share of the items"):
        BudgetConfig.model_validate({"max_flips": "5pp"})
    text = "model: m\nschemes: {w: {method: rtn}}\ntasks: {ppl: {perplexity: c.txt}}\nbudgets:\n  - {max_flips: 5%}\n"
    with pytest.raises(QuantConfigError, match=r"budgets\[0\].max_flips: task 'ppl' reports a perplexity"):
        load_suite_text(text, "s.quant.yaml")
    suite, lines = load_suite_text(text.replace("ppl: {perplexity: c.txt}", "arc: {task: arc_easy}"), "s.quant.yaml")
    assert suite.budgets[0].label(0) == "flips<=5%"


def _pmf(n: int, p: float) -> list[float]:
    return [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]


@pytest.mark.parametrize("n", [20, 50, 100, 150, 500])
@pytest.mark.parametrize("confidence", [0.90, 0.95])
def test_flip_bounds_hold_their_error_rates_exactly(n, confidence):
    """At a true flip share equal to the budget, an alarm fires (lower bound above it) with probability at most
    1 - confidence; just above the budget, a gate passes (upper bound at or below it) at most that often.
    Exact enumeration over every count of changed items, flip budgets 1-20%."""
    alpha = 1 - confidence
    bounds = [clopper_pearson(k, n, confidence) for k in range(n + 1)]
    for limit in (0.01, 0.02, 0.05, 0.10, 0.20):
        pmf = _pmf(n, limit)
        false_alarm = sum(p for p, (lo, _) in zip(pmf, bounds, strict=True) if lo > limit + 1e-12)
        assert false_alarm <= alpha + 1e-9, (limit, false_alarm)
        worst_pass = max(
            sum(p for p, (_, hi) in zip(_pmf(n, true), bounds, strict=True) if hi <= limit + 1e-12)
            for true in (limit + 1e-9, limit * 1.01, limit + 0.005)
        )
        assert worst_pass <= alpha + 1e-9, (limit, worst_pass)
