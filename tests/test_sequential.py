"""Sequential evaluation and the suite's family of alarms: the plan, and the error rates, by simulation.

The rules under test are the ones the plugin applies: the same ``score_bounds`` at a stage's share of the
error rate (``spending_shares`` / ``stage_confidence``), and ``holm_rejections`` over the alarms' tests.
Monte-Carlo error is stated with each assertion: R draws give a standard error of sqrt(a(1-a)/R).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_quant.config import SequentialConfig, TaskConfig
from pytest_quant.errors import BaselineError
from pytest_quant.results import TaskResult
from pytest_quant.sequential import (
    chunks_of,
    concatenate,
    document_order,
    plan_of,
    plan_record,
    prefix,
    spending_shares,
    stage_confidence,
    stage_sizes,
    worker_order,
)
from pytest_quant.stats import holm_rejections, score_bounds

ALPHA = 0.05


def test_stage_sizes_grow_geometrically_and_end_at_max():
    assert stage_sizes(100, 2, 1000) == (100, 200, 400, 800, 1000)
    assert stage_sizes(10, 2, 60) == (10, 20, 40, 60)
    assert stage_sizes(50, 1.5, 50) == (50,)
    assert stage_sizes(80, 2, 50) == (50,)  # first beyond the population: one stage
    assert stage_sizes(1, 1.01, 4) == (1, 2, 3, 4)  # always at least one more item per stage
    with pytest.raises(ValueError):
        stage_sizes(0, 2, 10)


def test_spending_shares_sum_to_one_and_obrien_fleming_spends_little_early():
    sizes = (100, 200, 400, 800)
    assert spending_shares(sizes, "bonferroni", ALPHA) == (0.25, 0.25, 0.25, 0.25)
    obf = spending_shares(sizes, "obrien-fleming", ALPHA)
    assert math.isclose(sum(obf), 1.0, rel_tol=1e-12)
    assert obf[0] < 0.001 and obf[-1] > 0.6 and list(obf) == sorted(obf)
    assert stage_confidence(0.95, 0.25) == pytest.approx(0.9875)
    with pytest.raises(ValueError, match="spending"):
        spending_shares(sizes, "pocock", ALPHA)


def test_document_order_is_a_seeded_permutation_and_chunks_partition_it():
    order = document_order(60, seed=3)
    assert sorted(order) == list(range(60)) and order == document_order(60, seed=3)
    assert order != document_order(60, seed=4)
    chunks = chunks_of(order, (10, 20, 40, 60))
    assert [len(c) for c in chunks] == [10, 10, 20, 20]
    assert sorted(i for c in chunks for i in c) == list(range(60))
    assert all(list(c) == sorted(c) for c in chunks)  # lm-eval's samples must be sorted (see lmeval_hf)


def test_xdist_workers_start_on_different_evaluations(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert worker_order(["a", "b", "c", "d", "e"]) == ["a", "b", "c", "d", "e"]
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    assert worker_order(["a", "b", "c", "d", "e"]) == ["a", "b", "c", "d", "e"]
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert worker_order(["a", "b", "c", "d", "e"]) == ["c", "d", "e", "a", "b"]
    assert worker_order([]) == []


def _chunk(ids, scores, fp):
    return TaskResult(
        "t",
        "acc",
        float(np.mean(scores)),
        True,
        "mean",
        tuple(str(i) for i in ids),
        tuple(float(s) for s in scores),
        fingerprint=fp,
        meta={"items_fingerprint": "d" + fp},
    )


def test_a_baseline_prefix_pairs_with_the_same_stages_of_a_candidate_and_nothing_else():
    sizes = (2, 4, 6)
    base_chunks = [_chunk([5, 9], [1, 0], "a"), _chunk([0, 2], [1, 1], "b"), _chunk([1, 7], [0, 0], "c")]
    base = concatenate(base_chunks, "t", plan_record(sizes, 10, base_chunks))
    plan = plan_of(base, SequentialConfig(first=2, growth=2, max=6), "m")
    assert plan.chunks(base) == [(5, 9), (0, 2), (1, 7)]
    two = prefix(base, plan, 2)
    assert two.item_ids == ("5", "9", "0", "2") and two.value == 0.75
    cand = concatenate([_chunk([5, 9], [0, 0], "a"), _chunk([0, 2], [1, 0], "b")], "t")
    assert cand.fingerprint == two.fingerprint and cand.meta["items_fingerprint"] == two.meta["items_fingerprint"]
    other = concatenate([_chunk([5, 9], [0, 0], "a"), _chunk([0, 2], [1, 0], "X")], "t")
    assert other.fingerprint != two.fingerprint  # another prompt in stage 2: no pairing
    with pytest.raises(BaselineError, match="stages"):
        plan_of(base, SequentialConfig(first=3, growth=2, max=6), "m")
    with pytest.raises(BaselineError, match="not recorded in stages"):
        plan_of(_chunk([1], [1], "z"), SequentialConfig(first=1, max=1), "m")


def test_task_config_refuses_two_ways_of_choosing_items():
    with pytest.raises(ValueError, match="'limit' and 'sequential'"):
        TaskConfig(name="a", limit=10, sequential={"first": 5})
    with pytest.raises(ValueError, match="windows of its corpus"):
        TaskConfig(name="a", perplexity="c.txt", sequential={"first": 5})
    with pytest.raises(ValueError, match="below first"):
        TaskConfig(name="a", sequential={"first": 50, "max": 20})
    assert TaskConfig(name="a", samples=[4, 1]).samples == (1, 4)
    # spending changes verdicts, not what is measured: not part of a baseline's identity
    a = TaskConfig(name="a", sequential={"first": 5, "spending": "bonferroni"}).fingerprint_payload()
    b = TaskConfig(name="a", sequential={"first": 5, "spending": "obrien-fleming"}).fingerprint_payload()
    assert a == b and TaskConfig(name="a", limit=3).fingerprint_payload().keys() == (
        TaskConfig(name="a", limit=4).fingerprint_payload().keys()
    )


# -- error rates of the sequential rule ------------------------------------------------------------------------
def _staged_counts(rng, draws, sizes, flip, loss):
    """Cumulative (worse, better) counts after each stage, for a true loss and flip rate (paired 0/1)."""
    p = [(flip + loss) / 2, (flip - loss) / 2, 1 - flip]
    steps = np.diff((0, *sizes))
    inc = np.stack([rng.multinomial(s, p, size=draws) for s in steps], axis=1)  # draws x stages x 3
    cum = np.cumsum(inc, axis=1)
    return cum[..., 0], cum[..., 1]


def _sequential_error(rng, draws, sizes, flip, budget, spending, *, gate):
    """How often the sequential rule wrongly decides a budget the true loss sits on: a gate shows it within
    (a false pass), an alarm shows it violated (a false alarm), at some stage."""
    worse, better = _staged_counts(rng, draws, sizes, flip, budget)
    shares = spending_shares(sizes, spending, ALPHA) if spending else (1.0,) * len(sizes)
    wrong = np.zeros(draws, dtype=bool)
    for k, n in enumerate(sizes):
        lo, hi = score_bounds(worse[:, k], better[:, k], n, stage_confidence(1 - ALPHA, shares[k]))
        wrong |= (hi <= budget) if gate else (lo > budget)
    return float(wrong.mean())


@pytest.mark.parametrize("spending", ["bonferroni", "obrien-fleming"])
@pytest.mark.parametrize(("flip", "budget"), [(0.10, 0.02), (0.05, 0.01), (0.20, 0.05)])
def test_sequential_rule_holds_its_error_rate_at_the_boundary(spending, flip, budget):
    """False pass (gate) and false alarm (alarm) at most 5% with a true loss on the budget, over stages of
    50..800 items. 20,000 draws: standard error 0.15pp at 5%; the bound allowed is 5% + 0.5pp."""
    rng = np.random.default_rng(7)
    sizes = stage_sizes(50, 2, 800)
    for gate in (True, False):
        rate = _sequential_error(rng, 20_000, sizes, flip, budget, spending, gate=gate)
        assert rate <= ALPHA + 0.005, (spending, flip, budget, gate, rate)


def test_looking_after_every_stage_without_spending_breaks_the_error_rate():
    """The control: the same stages judged at the full 5% each time miss far more often (the test can fail)."""
    rng = np.random.default_rng(8)
    sizes = stage_sizes(50, 2, 800)
    rate = _sequential_error(rng, 20_000, sizes, 0.10, 0.02, None, gate=True)
    assert rate > 0.09, rate


# -- one family of alarms: Holm ------------------------------------------------------------------------------
def test_holm_rejects_step_down():
    p = {"a": 0.001, "b": 0.02, "c": 0.04, "d": 0.5}
    tests = {k: (lambda share, v=v: v <= ALPHA * share) for k, v in p.items()}
    # steps: 0.05/4 = 0.0125 rejects a; 0.05/3 = 0.0167 rejects nothing more: stop
    assert holm_rejections(tests) == {"a": 1}
    p["b"] = 0.015
    tests = {k: (lambda share, v=v: v <= ALPHA * share) for k, v in p.items()}
    assert holm_rejections(tests) == {"a": 1, "b": 2}
    assert holm_rejections({}) == {}


def _family_false_alarm(rng, suites, budgets, *, holm):
    """Share of suites with at least one false alarm when every one of ``budgets`` alarms sits exactly on its
    budget (independent tasks: n=200 paired 0/1 items, 10% flips, budget 2pp)."""
    n, flip, budget = 200, 0.10, 0.02
    worse, better = _staged_counts(rng, suites * budgets, (n,), flip, budget)
    worse, better = worse[:, 0].reshape(suites, budgets), better[:, 0].reshape(suites, budgets)
    if not holm:
        lo, _ = score_bounds(worse, better, n, 1 - ALPHA)
        return float((lo > budget).any(axis=1).mean())
    # the alarm's test at every level Holm can ask for: share 1/(m - r), r = 0..m-1
    pairs, where = np.unique(np.stack([worse.ravel(), better.ravel()], axis=1), axis=0, return_inverse=True)
    rejects = {}
    for r in range(budgets):  # bounds of each distinct (worse, better) count once
        lo, _ = score_bounds(pairs[:, 0], pairs[:, 1], n, 1 - ALPHA / (budgets - r))
        rejects[1.0 / (budgets - r)] = (lo > budget)[where.ravel()].reshape(suites, budgets)
    any_false = 0
    for s in range(suites):
        tests = {str(b): (lambda share, b=b, s=s: bool(rejects[share][s, b])) for b in range(budgets)}
        any_false += bool(holm_rejections(tests))
    return any_false / suites


def test_holm_keeps_the_family_wise_false_alarm_rate_with_thirty_budgets_at_the_boundary():
    """30 alarms, every budget held exactly: with Holm at most 5% of suites raise any alarm (4,000 suites:
    standard error 0.34pp; allowed 5% + 1pp); judged alone, most suites raise at least one."""
    rng = np.random.default_rng(11)
    with_holm = _family_false_alarm(rng, 4_000, 30, holm=True)
    alone = _family_false_alarm(rng, 4_000, 30, holm=False)
    assert with_holm <= ALPHA + 0.01, with_holm
    assert alone > 0.5, alone
