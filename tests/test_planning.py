"""Collection-time planning: which budgets their items can decide, with the numbers that say so."""

from __future__ import annotations

import pytest

from pytest_quant.baseline import BaselineStore
from pytest_quant.planning import findings
from pytest_quant.suite import expand_checks, load_suite_text

SUITE = """\
model: m
schemes:
  w8: {method: rtn}
tasks:
  arc_challenge: {metric: acc_norm, expected_value: 0.55}
  mmlu: {metric: acc, expected_value: 0.68}
  winogrande: {metric: acc, expected_value: 0.77, limit: 200}
  ppl: {task: lambada_openai, metric: perplexity, limit: 20}
budgets:
"""


def _findings(budgets: str, tmp_path, flip: float = 0.03) -> list[str]:
    suite, lines = load_suite_text(SUITE + budgets, "s.quant.yaml")
    found = findings(suite, expand_checks(suite, lines), store=BaselineStore(tmp_path), mode_of=lambda *m: next(
        (x for x in m if x), "gate"), confidence_of=lambda *c: 0.95, flip_rate=flip)
    return [f.message for f in found]


def test_a_one_percent_gate_on_arc_challenge_is_undecidable_at_its_full_size(tmp_path):
    """1% of 0.55 at 3% flips, 95% confidence, 80% power: (2.487^2 * 0.03) / 0.0055^2 ~ 6,130 items > 1,172 (6,132 with the exact quantiles)."""
    (message,) = _findings("  - {schemes: [w8], tasks: [arc_challenge], max_drop: 1%}\n", tmp_path)
    assert "cannot be decided even at the task's full size" in message and "about 6,132 items" in message
    assert "the task has 1,172" in message and "pool: true" in message and "full MMLU has 14,042 items" in message


def test_the_same_budget_is_decidable_on_mmlu_and_pooling_makes_small_tasks_decidable(tmp_path):
    assert _findings("  - {schemes: [w8], tasks: [mmlu], max_drop: 1%}\n", tmp_path) == []
    pooled = "  - {schemes: [w8], tasks: [arc_challenge, mmlu], max_drop: 2%, pool: true}\n"
    assert _findings(pooled, tmp_path) == []  # effective size 4 / (1/1172 + 1/14042) = 2,163 items


def test_a_limit_below_what_the_budget_needs_is_named_with_the_real_item_count(tmp_path):
    """``limit: 4000`` on a task of 1,172 items is 1,172 items, not 4,000."""
    big_limit = SUITE.replace("arc_challenge: {metric: acc_norm,", "arc_challenge: {metric: acc_norm, limit: 4000,")
    suite, lines = load_suite_text(big_limit + "  - {schemes: [w8], tasks: [arc_challenge], max_drop: 4%}\n", "s")
    (found,) = findings(suite, expand_checks(suite, lines), store=BaselineStore(tmp_path), mode_of=lambda *m: "gate",
                        confidence_of=lambda *c: 0.95, flip_rate=0.10)
    assert "the task has 1,172" in found.message  # 4% of 0.55 at 10% flips needs ~1,278 > 1,172
    (limited,) = _findings("  - {schemes: [w8], tasks: [winogrande], max_drop: 5%}\n", tmp_path, flip=0.10)
    assert limited.startswith("budget drop<=5%[w8-winogrande]: 200 items are too few") and "about 418 items" in limited


def test_a_measured_flip_rate_replaces_the_assumed_one(tmp_path):
    suite, lines = load_suite_text(SUITE + "  - {schemes: [w8], tasks: [arc_challenge], max_drop: 4%}\n", "s")
    checks = expand_checks(suite, lines)
    common = dict(store=BaselineStore(tmp_path), mode_of=lambda *m: "gate", confidence_of=lambda *c: 0.95, flip_rate=0.10)
    assert findings(suite, checks, **common)  # 10% assumed: ~1,278 > 1,172
    measured = {"m|w8|arc_challenge": {"flip_rate": 0.02, "n": 1172}}
    assert findings(suite, checks, measured=measured, **common) == []  # 2% measured: ~256


@pytest.mark.parametrize("mode", ["gate", "alarm"])
def test_continuous_metrics_below_the_minimum_items_are_named(tmp_path, mode):
    (message,) = _findings(f"  - {{schemes: [w8], tasks: [ppl], max_drop: 5%, mode: {mode}}}\n", tmp_path)
    assert "has 20 items: on fewer than 30 items a continuous metric decides nothing" in message


def test_a_groups_limit_counts_once_per_subtask(tmp_path):
    """lm-eval applies a group's limit to each subtask: ``limit: 20`` on MMLU evaluates 57 x 20 = 1,140 items."""
    grouped = SUITE.replace("mmlu: {metric: acc, expected_value: 0.68}", "mmlu: {metric: acc, expected_value: 0.68, limit: 20}")
    def found(budget: str) -> list[str]:
        suite, lines = load_suite_text(grouped + f"  - {{schemes: [w8], tasks: [mmlu], max_drop: {budget}}}\n", "s")
        return [f.message for f in findings(suite, expand_checks(suite, lines), store=BaselineStore(tmp_path),
                                             mode_of=lambda *m: "gate", confidence_of=lambda *c: 0.95, flip_rate=0.10)]

    assert found("5%") == []  # ~535 items needed: 1,140 decide it (20 would not)
    (message,) = found("2%")
    assert message.startswith("budget drop<=2%[w8-mmlu]: 1,140 items are too few"), message


def test_a_baseline_stored_per_backend_under_backend_auto_is_read(tmp_path):
    """Under backend auto a task's baseline is stored as '<task>@vllm' / '<task>@hf': planning reads its size."""
    from pytest_quant.results import TaskResult

    store = BaselineStore(tmp_path)
    scores = tuple(float(i % 2) for i in range(100))
    result = TaskResult("arc_challenge", "acc_norm", 0.5, True, "mean", tuple(map(str, range(100))), scores)
    store.write("m", "fp", "arc_challenge@hf", result, {}, {})
    suite, lines = load_suite_text(SUITE + "  - {schemes: [w8], tasks: [arc_challenge], max_drop: 4%}\n", "s")
    (found,) = findings(suite, expand_checks(suite, lines), store=store, mode_of=lambda *m: "gate",
                        confidence_of=lambda *c: 0.95, flip_rate=0.10)
    # the stored value and size (recorded on the whole task), not the suite's expected 0.55 and lm-eval's 1,172
    assert "at a baseline of 0.500" in found.message and "the task has 100." in found.message, found.message
