"""Before any compute: can a suite's budgets be decided with the items its tasks have?

Logic layer. Read at collection time, from the suite, the stored baseline (when there is one)
and the statistics' sample-size arithmetic; the items module turns each finding into a
warning at the budget's line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pytest_quant.baseline import BaselineStore
from pytest_quant.budget import Mode
from pytest_quant.config import SuiteConfig
from pytest_quant.errors import BaselineError
from pytest_quant.stats import required_items
from pytest_quant.suite import Check

PERPLEXITY_METRICS = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")


@dataclass(frozen=True)
class Finding:
    """Something to warn about before the run, at ``line`` of the suite file."""

    message: str
    line: int


def unresolvable(
    suite: SuiteConfig,
    checks: list[Check],
    *,
    store: BaselineStore,
    mode_of: Callable[..., Mode],
    confidence_of: Callable[..., float],
    flip_rate: float,
) -> list[Finding]:
    """Budgets whose task has too few items to resolve them (one finding per budget and task).

    ``mode_of`` / ``confidence_of`` resolve a budget's mode and confidence as the session does.
    """
    findings: list[Finding] = []
    warned: set[tuple[int, str]] = set()
    for check in checks:
        budget = check.budget
        if budget.efficiency is not None or budget.min_value is not None or check.task is None:
            continue  # a measurement per scheme, or a floor on one model's value: nothing paired to resolve
        task = suite.tasks[check.task]
        th = budget.threshold if budget.compare is None else budget.compare.margin
        mode = mode_of(budget.mode, suite.mode)
        if task.kind != "lm_eval" or mode == "point" or (check.budget_index, check.task) in warned:
            continue
        base_value, n, aggregation = 0.5, task.limit, None
        try:
            entry = store.load(suite.model.name, task.name)
            base_value, aggregation = entry.result.value, entry.result.aggregation
            n = n or entry.result.n
        except BaselineError:
            pass
        if aggregation == "perplexity" or (task.metric or "").split(",")[0] in PERPLEXITY_METRICS:
            continue  # the flip-rate model below is for 0/1 scores; log-likelihoods resolve far smaller changes
        if n is None or (th is None and mode == "alarm"):
            continue  # an alarm on a "no worse" claim fires on any clear loss; nothing to resolve
        limit_abs = 0.0 if th is None else th.absolute(base_value)
        confidence = confidence_of(budget.confidence, suite.confidence)
        need = required_items(limit_abs, confidence, flip_rate)
        if n >= need:
            continue
        warned.add((check.budget_index, check.task))
        what = (
            "a 'no worse' claim without a margin (a gate then needs proof of superiority; add '- 1pp')"
            if th is None
            else f"a loss of {th} (~{limit_abs:.4f} absolute at baseline {base_value:.3f})"
        )
        need_txt = "no finite number of items" if need == float("inf") else f"about {need} items"
        findings.append(
            Finding(
                f"task {task.name!r} has {n} items, too few to resolve {what} with {confidence:.0%} "
                f"confidence in {mode} mode: {need_txt} needed (assuming {flip_rate:.0%} "
                f"of answers flip; ini quant_assumed_flip_rate). "
                + (
                    "Gate items will fail for lack of evidence."
                    if mode == "gate"
                    else "Alarm items will only catch large losses."
                ),
                check.line or 0,
            )
        )
    return findings
