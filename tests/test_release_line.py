"""The end of a session: one release line per suite, and whether the fast tiers rank schemes as accuracy does."""

from __future__ import annotations

import math

import pytest

from pytest_quant.report import _spearman, agreement_lines, markdown, release_lines, tier_values


def _row(scheme, task, metric, baseline, value, *, verdict="pass", evidence="within", mode="alarm", **kw):
    return {"suite": "s", "model": "m", "scheme": scheme, "task": task, "metric": metric, "baseline": baseline,
            "value": value, "verdict": verdict, "evidence": evidence, "mode": mode, "confidence": 0.95, **kw}


ROWS = [
    _row("w8", "arc", "acc", 0.50, 0.50, evidence="inconclusive"),
    _row("fp8", "arc", "acc", 0.50, 0.48, evidence="inconclusive"),
    _row("w4", "arc", "acc", 0.50, 0.40, verdict="fail", evidence="violated"),
    _row("w2", "arc", "acc", 0.50, 0.26, verdict="xfail", evidence="violated"),
    _row("w8", "ppl", "perplexity", 20.0, 20.5, mode="gate"),
    _row("w8 vs fp8", "kl", "kld", 0.03, 0.004, mode="gate"),
    _row("fp8 vs w4", "kl", "kld", 0.30, 0.03, mode="gate"),
    _row("w4 vs w2", "kl", "kld", 9.0, 0.30, mode="gate"),
    _row("w4", "-", "weight_memory", 100.0, 30.0, mode="point", ratio=0.3),  # efficiency: not an accuracy tier
]


def test_release_line_counts_decisions_and_states_the_error_rate():
    lines = release_lines(ROWS)
    assert lines[0] == ("release s: BLOCKED (9 budgets: 7 pass, 1 fail, 1 xfail; 7 decided: 5 within, 2 violated, "
                        "2 inconclusive)")
    assert "4 gate(s): a false pass of the release" in lines[1] and "needs no correction" in lines[1]
    # 4 alarms at 5% each, judged alone: 1 - 0.95^4 = 18.5%
    assert "4 alarm(s), each at 5% alone" in lines[2] and "up to 19%" in lines[2]
    assert "Bonferroni: at most 20%" in lines[2]
    assert release_lines([r for r in ROWS if r["verdict"] != "fail"])[0].startswith("release s: passes")
    assert "release s: BLOCKED" in markdown(ROWS)


def test_release_line_states_holm_and_sequential_savings():
    """Alarms judged as a family (Holm) hold the family-wise rate at alpha; a stage's confidence is not the
    nominal one the line quotes; a sequential task says how many items its schemes took."""
    holm = {"family": {"size": 4, "correction": "holm"}}
    seq = {"stages": 4, "max": 400, "spending": "bonferroni"}
    rows = [
        {**r, **holm} if r["mode"] == "alarm" else r for r in ROWS
    ] + [
        _row("w8", "arc2", "acc", 0.5, 0.5, mode="gate", confidence=0.9875, nominal_confidence=0.95,
             sequential={**seq, "stage": 1, "n": 50, "decided": True, "evaluated": {"w8": 50, "fp8": 400}}),
        _row("fp8", "arc2", "acc", 0.5, 0.5, mode="alarm", confidence=0.9875, nominal_confidence=0.95,
             evidence="inconclusive", family=holm["family"],
             sequential={**seq, "stage": 4, "n": 400, "decided": False, "evaluated": {"w8": 50, "fp8": 400}}),
    ]
    lines = release_lines(rows)
    assert any("5 alarm(s) judged together (Holm" in ln and "at most 5%" in ln for ln in lines), lines
    assert not any("alone" in ln for ln in lines)
    assert any(
        ln.strip() == "sequential arc2: 1 of 2 budget(s) decided before the last stage; its budgets read 450 of 800 items "
        "(2 scheme(s), up to 400 each)" for ln in lines
    ), lines


def test_fast_tiers_are_ranked_against_accuracy():
    tiers = tier_values(ROWS)["m"]
    assert set(tiers["accuracy"]) == {"w8", "fp8", "w4", "w2"}  # the memory row is left out
    assert tiers["kl"] == {"w8": 0.004, "fp8": pytest.approx(0.03), "w4": pytest.approx(0.30), "w2": 9.0}
    assert agreement_lines(ROWS) == ["fast tiers against accuracy on m: KL rho = +1.00 (n=4 schemes) (Spearman, "
                                     "rank by loss)"]  # perplexity: one scheme, too few to rank
    swapped = [dict(r, value=0.45) if r["scheme"] == "w8" and r["task"] == "arc" else r for r in ROWS]
    assert "KL rho = +0.80 (n=4 schemes)" in agreement_lines(swapped)[0]


def test_spearman_matches_scipy_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    for xs, ys in [([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), ([0.1, 0.1, 0.3, 0.2], [3, 1, 2, 2]), ([1, 2, 3], [3, 2, 1])]:
        assert _spearman(list(map(float, xs)), list(map(float, ys))) == pytest.approx(
            scipy_stats.spearmanr(xs, ys).statistic)
    assert math.isnan(_spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
