"""The fixtures of Python suites: thin factories over the session's work.

Plugin layer (pytest-regressions' ``plugin.py`` style): each fixture returns a function that
coerces its arguments (:mod:`pytest_quant.config`) and hands off; a backend whose library or
kernel is missing skips the test with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pytest_quant.artifacts import artifact
from pytest_quant.budget import MODES, parse_threshold, recovery_to_threshold
from pytest_quant.checks import stamp
from pytest_quant.config import (
    EvaluationConfig,
    ModelConfig,
    SchemeConfig,
    TaskConfig,
    as_evaluation,
    as_model,
    as_scheme,
    as_task,
)
from pytest_quant.errors import BackendUnavailable, BudgetExceeded, QuantConfigError
from pytest_quant.evaluation import baseline, evaluate
from pytest_quant.items import get_session, skip_or_fail
from pytest_quant.reporter import report_baselines_written, report_row
from pytest_quant.results import TaskResult
from pytest_quant.verdict import Outcome, judge

Model = str | dict[str, Any] | ModelConfig
Scheme = dict[str, Any] | SchemeConfig | None
Task = str | dict[str, Any] | TaskConfig
Evaluation = dict[str, Any] | EvaluationConfig | None
T = TypeVar("T")


def _or_skip(fn: Callable[[], T], device: str = "cpu") -> T:
    """``fn()``; an optional library (or a kernel, on a CPU) missing here skips the test, saying so
    (at the test's line: this frame and the fixtures' are hidden from the traceback)."""
    __tracebackhide__ = True
    try:
        return fn()
    except BackendUnavailable as exc:
        skip_or_fail(exc, device)


@pytest.fixture
def quant_model(request: pytest.FixtureRequest) -> Callable[..., Path]:
    """``quant_model(model, scheme=None) -> Path``: the (quantized, cached) model folder."""
    session = get_session(request.config)

    def make(model: Model, scheme: Scheme = None) -> Path:
        __tracebackhide__ = True
        return _or_skip(lambda: artifact(session, as_model(model), as_scheme(scheme), source=request.node.nodeid))

    return make


@pytest.fixture
def quant_eval(request: pytest.FixtureRequest) -> Callable[..., TaskResult]:
    """``quant_eval(model, task, scheme=None, evaluation=None) -> TaskResult`` with per-item scores."""
    session = get_session(request.config)

    def run(
        model: Model, task: Task, scheme: Scheme = None, evaluation: Evaluation = None, seed: int = 0
    ) -> TaskResult:
        __tracebackhide__ = True
        ev, source = as_evaluation(evaluation), request.node.nodeid
        return _or_skip(
            lambda: evaluate(session, as_model(model), as_scheme(scheme), as_task(task), ev, seed=seed, source=source),
            ev.device,
        )

    return run


@pytest.fixture
def quant_baseline(request: pytest.FixtureRequest) -> Callable[..., TaskResult]:
    """``quant_baseline(model, task, evaluation=None) -> TaskResult``: the stored baseline
    (written first under --quant-update-baselines)."""
    session = get_session(request.config)

    def load(model: Model, task: Task, evaluation: Evaluation = None, seed: int = 0) -> TaskResult:
        __tracebackhide__ = True
        try:
            return baseline(session, as_model(model), as_task(task), as_evaluation(evaluation), seed=seed)
        finally:
            report_baselines_written(request.node.user_properties, session)

    return load


@pytest.fixture
def quant_check(request: pytest.FixtureRequest) -> Callable[..., Outcome]:
    """``quant_check(candidate, reference, max_drop="1%" | min_recovery="99%", mode=None, confidence=None)``.

    Judges the candidate against the reference on the same items, records the row
    for the summary and report, and fails the test with the explanation if the
    budget does not hold. ``max_drop=None`` and ``min_recovery=None`` mean "no worse".
    """
    session = get_session(request.config)

    def check(
        candidate: TaskResult,
        reference: TaskResult,
        *,
        max_drop: str | None = None,
        min_recovery: str | None = None,
        mode: str | None = None,
        confidence: float | None = None,
        method: str = "auto",
        label: str = "quantized",
        reference_label: str = "baseline",
    ) -> Outcome:
        __tracebackhide__ = True
        if max_drop is not None and min_recovery is not None:
            raise QuantConfigError("give max_drop or min_recovery, not both", field="quant_check")
        try:
            threshold = (
                parse_threshold(max_drop)
                if max_drop is not None
                else (recovery_to_threshold(min_recovery) if min_recovery is not None else None)
            )
        except ValueError as exc:
            raise QuantConfigError(str(exc), field="max_drop" if max_drop is not None else "min_recovery") from None
        if mode is not None and mode not in MODES:
            raise QuantConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}", field="mode")
        outcome = judge(
            reference,
            candidate,
            threshold=threshold,
            mode=session.resolve_mode(mode),
            confidence=session.resolve_confidence(confidence),
            method=method,
            ref_label=reference_label,
            cand_label=label,
        )
        node = request.node.nodeid
        report_row(request.node.user_properties, stamp(outcome.row, suite=node, model="", scheme=label, item=node))
        if not outcome.passed:
            raise BudgetExceeded(outcome.explanation)
        return outcome

    return check
