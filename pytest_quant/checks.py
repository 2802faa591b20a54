"""Running one check: a budget applied to one scheme (or comparison) on one task.

:func:`run_check` gathers the two results a check compares (the scheme's evaluation, the
stored baseline, another scheme, a reference model's baseline, a recorded value, or two
efficiency measurements) and hands them to :mod:`pytest_quant.verdict`. :func:`stamp` is the
one place a result row gets its identity (suite, model, scheme, item), for every kind of row:
judged, errored, or from the ``quant_check`` fixture.
"""

from __future__ import annotations

from typing import Any

from pytest_quant.artifacts import footprint, weight_columns
from pytest_quant.budget import Mode, Threshold, format_bytes
from pytest_quant.config import BASELINE, SuiteConfig
from pytest_quant.evaluation import baseline, evaluate, runtime
from pytest_quant.results import RuntimeMeasurement, TaskResult
from pytest_quant.session import QuantSession
from pytest_quant.suite import Check
from pytest_quant.verdict import (
    Outcome,
    both,
    judge,
    judge_divergence,
    judge_efficiency,
    judge_flips,
    judge_floor,
    judge_parity,
    judge_pooled,
)


def stamp(
    row: dict[str, Any],
    *,
    suite: str,
    model: str,
    scheme: str,
    item: str,
    position: int | None = None,
    budget_name: str | None = None,
) -> dict[str, Any]:
    """Give ``row`` its identity: the suite, model, scheme (or comparison) and test item it belongs to."""
    row.update({"suite": suite, "model": model, "scheme": scheme, "item": item})
    if position is not None:
        row["position"] = position  # in the suite's collection order: reports list rows in it
    if budget_name is not None:
        row["budget_name"] = budget_name
    return row


def scheme_label(suite: SuiteConfig, check: Check) -> str:
    """How reports name what a check judges: a scheme, ``a vs b``, or the model itself (a floor on it)."""
    cmp = check.budget.compare
    if cmp is not None:
        return f"{cmp.better} vs {cmp.worse}"
    if check.scheme == BASELINE:
        return suite.model.name
    return str(check.scheme)


def error_row(
    suite: SuiteConfig, check: Check, error: BaseException, *, source: str, item: str, position: int
) -> dict[str, Any]:
    """The row of a check that could not be judged (its error is the item's failure)."""
    task = check.task if not check.pool else f"pool({'+'.join(check.pool)})"
    row = {"verdict": "error", "error": str(error), "task": task, "budget": str(check.budget.claim)}
    return _stamp_check(row, suite, check, source=source, item=item, position=position)


def _stamp_check(
    row: dict[str, Any], suite: SuiteConfig, check: Check, *, source: str, item: str, position: int
) -> dict[str, Any]:
    return stamp(
        row,
        suite=suite.name or source,
        model=suite.model.name,
        scheme=scheme_label(suite, check),
        item=item,
        position=position,
        budget_name=check.name,
    )


def run_check(
    session: QuantSession, suite: SuiteConfig, check: Check, *, source: str, item: str, position: int
) -> Outcome:
    """Judge ``check``; the outcome's row is stamped with the check's identity."""
    budget = check.budget
    if budget.efficiency is not None:
        outcome = _efficiency(session, suite, check, source=source)
    else:
        # a parity item is upstream's point rule, whatever --quant-mode says
        mode = "point" if budget.parity is not None else session.resolve_mode(budget.mode, suite.mode)
        confidence = session.resolve_confidence(budget.confidence, suite.confidence)
        judged = (
            _floor
            if budget.min_value is not None
            else _divergence_claim
            if budget.max_kld is not None or budget.min_top1_agreement is not None
            else (_pooled if check.pool else _paired)
        )
        outcome = judged(session, suite, check, mode=mode, confidence=confidence, source=source)
    _stamp_check(outcome.row, suite, check, source=source, item=item, position=position)
    return outcome


def _divergence_claim(
    session: QuantSession, suite: SuiteConfig, check: Check, *, mode: Mode, confidence: float, source: str
) -> Outcome:
    """``max_kld`` / ``min_top1_agreement`` on a divergence task: the scheme's per-window values."""
    budget, scheme = check.budget, str(check.scheme)
    candidate = _result(session, suite, scheme, str(check.task), source)
    upper = budget.max_kld is not None
    limit = budget.max_kld if upper else budget.min_top1_agreement
    assert limit is not None
    outcome = judge_divergence(
        candidate, limit=limit, upper=upper, mode=mode, confidence=confidence, cand_label=scheme, seed=suite.seed
    )
    outcome.row.update(weight_columns(session, suite.model, suite.schemes[scheme], source=source))
    return outcome


def _result(session: QuantSession, suite: SuiteConfig, name: str, task: str, source: str) -> TaskResult:
    """The result a comparison names: the baseline, a reference model's baseline, or a scheme's evaluation."""
    if name == BASELINE:
        return baseline(session, suite.model, suite.tasks[task], suite.evaluation, seed=suite.seed)
    if name in suite.references:  # another model as is: its own stored baseline
        model, evaluation = suite.reference_run(name)
        return baseline(session, model, suite.tasks[task], evaluation, seed=suite.seed)
    return evaluate(
        session, suite.model, suite.schemes[name], suite.tasks[task], suite.evaluation, seed=suite.seed, source=source
    )


def _paired(
    session: QuantSession, suite: SuiteConfig, check: Check, *, mode: Mode, confidence: float, source: str
) -> Outcome:
    """A loss budget against the baseline, or a comparison of two schemes / models, item by item."""
    budget, task = check.budget, str(check.task)
    if budget.compare is not None:
        cmp = budget.compare
        reference, candidate = (
            _result(session, suite, cmp.worse, task, source),
            _result(session, suite, cmp.better, task, source),
        )
        outcome = judge(
            reference,
            candidate,
            threshold=cmp.margin,
            mode=mode,
            confidence=confidence,
            method=budget.method,
            ref_label=cmp.worse,
            cand_label=cmp.better,
            seed=suite.seed,
            across_models=cmp.worse in suite.references or cmp.better in suite.references,
        )
        outcome.row["compared_weights"] = _compared_weights(session, suite, outcome.row, cmp.better, cmp.worse, source)
        return outcome
    scheme = str(check.scheme)
    reference, candidate = (
        _result(session, suite, BASELINE, task, source),
        _result(session, suite, scheme, task, source),
    )
    if budget.max_flips is not None:
        outcome = judge_flips(
            reference, candidate, limit=budget.max_flips.value, mode=mode, confidence=confidence, cand_label=scheme
        )
    elif budget.parity is not None:
        assert budget.threshold is not None
        outcome = judge_parity(
            reference, candidate, threshold=budget.threshold, confidence=confidence, method=budget.method,
            cand_label=scheme, seed=suite.seed,
        )  # fmt: skip
    else:
        outcome = judge(
            reference, candidate, threshold=budget.threshold, mode=mode, confidence=confidence, method=budget.method,
            ref_label="baseline", cand_label=scheme, seed=suite.seed,
        )  # fmt: skip
    outcome.row.update(weight_columns(session, suite.model, suite.schemes[scheme], source=source))
    return outcome


def _pooled(
    session: QuantSession, suite: SuiteConfig, check: Check, *, mode: Mode, confidence: float, source: str
) -> Outcome:
    """A loss budget (or comparison) judged once on the macro average over the budget's tasks."""
    budget = check.budget
    cmp = budget.compare
    worse, better = (cmp.worse, cmp.better) if cmp is not None else (BASELINE, str(check.scheme))
    pairs = [
        (_result(session, suite, worse, t, source), _result(session, suite, better, t, source)) for t in check.pool
    ]
    return judge_pooled(
        pairs,
        threshold=cmp.margin if cmp is not None else budget.threshold,
        mode=mode,
        confidence=confidence,
        ref_label=worse,
        cand_label=better,
        across_models=cmp is not None and (cmp.worse in suite.references or cmp.better in suite.references),
    )


def _compared_weights(
    session: QuantSession, suite: SuiteConfig, row: dict[str, Any], better: str, worse: str, source: str
) -> dict[str, list[float]]:
    """``{scheme: [value, weight bytes]}`` for the sides of a comparison that are schemes of the suite's model
    (the Pareto plot shows them even where no budget judges them against the baseline)."""
    out: dict[str, list[float]] = {}
    for name, value in ((better, row.get("value")), (worse, row.get("baseline"))):
        scheme = suite.schemes.get(name)
        weight = weight_columns(session, suite.model, scheme, source=source).get("weight_bytes") if scheme else None
        if weight is not None and value is not None:
            out[name] = [float(value), float(weight)]
    return out


def _floor(
    session: QuantSession, suite: SuiteConfig, check: Check, *, mode: Mode, confidence: float, source: str
) -> Outcome:
    """A ``min_value`` floor on a scheme's value, or on the model as is (scheme ``baseline``).

    A floor is one recorded number (vLLM's lm-eval configs), so it cannot be judged
    item by item. For the model as is, once ``baselines/`` holds a file for the model,
    this run's evaluation is also compared item by item with the recorded per-item
    scores, within the floor's relative tolerance; the item passes when both hold.
    """
    budget, task = check.budget, suite.tasks[str(check.task)]
    floor = budget.min_value
    assert floor is not None and check.scheme is not None
    as_is = check.scheme == BASELINE
    label = suite.model.name if as_is else check.scheme
    scheme = None if as_is else suite.schemes[check.scheme]
    candidate = evaluate(session, suite.model, scheme, task, suite.evaluation, seed=suite.seed, source=source)
    outcome = judge_floor(candidate, floor, mode=mode, confidence=confidence, cand_label=label)
    if as_is and (session.options.update_baselines or session.store.path_for(suite.model.name).exists()):
        reference = baseline(session, suite.model, task, suite.evaluation, seed=suite.seed)
        paired = judge(
            reference,
            candidate,
            threshold=Threshold(floor.rtol, "relative") if floor.rtol else None,
            mode=mode,
            confidence=confidence,
            method=budget.method,
            ref_label="recorded baseline",
            cand_label=label,
            seed=suite.seed,
        )
        outcome = both(outcome, paired)
    outcome.row.update(weight_columns(session, suite.model, scheme, source=source))
    return outcome


# The unquantized model's efficiency is measured live (speed cached per machine), never read
# from baselines/: weight memory is computed from the files in milliseconds on any machine, and
# a speed is only comparable with one measured on the same machine, so a number recorded
# elsewhere (a laptop, last month's CI runner) would make the ratio meaningless.
def _efficiency(session: QuantSession, suite: SuiteConfig, check: Check, *, source: str) -> Outcome:
    """``max_memory`` / ``min_decode_speedup`` / ``min_prefill_speedup`` for one scheme: measured, judged as a point."""
    budget, measurement = check.budget, check.budget.efficiency
    assert measurement is not None and check.scheme is not None
    scheme = None if check.scheme == BASELINE else suite.schemes[check.scheme]
    label = suite.model.name if scheme is None else check.scheme
    mine, base = footprint(session, suite.model, scheme, source=source), footprint(session, suite.model, None)
    details = [
        f"weights: {mine.how}; checkpoint on disk: {format_bytes(mine.checkpoint_bytes)} "
        f"(baseline {format_bytes(base.checkpoint_bytes)})"
    ]
    efficiency: dict[str, Any] = {
        "checkpoint_bytes": mine.checkpoint_bytes,
        "baseline_checkpoint_bytes": base.checkpoint_bytes,
        "weights": mine.how,
    }
    if measurement == "weight_memory":
        baseline_value, value = float(base.weight_bytes), float(mine.weight_bytes)
    else:
        rt = runtime(session, suite.model, scheme, suite.evaluation, suite.efficiency, source=source)
        base_rt = runtime(session, suite.model, None, suite.evaluation, suite.efficiency)
        baseline_value, value = getattr(base_rt, measurement), getattr(rt, measurement)
        details += _speed_details(rt, base_rt, label)
        efficiency.update(_speed_columns(rt, base_rt))
    outcome = judge_efficiency(
        measurement, baseline=baseline_value, value=value, limit=budget.claim, cand_label=label, details=tuple(details)
    )
    outcome.row.update(
        {"weight_bytes": mine.weight_bytes, "baseline_weight_bytes": base.weight_bytes, "efficiency": efficiency}
    )
    return outcome


def _speed_details(rt: RuntimeMeasurement, base_rt: RuntimeMeasurement, label: str) -> list[str]:
    """How the speeds were measured, and the peak memory where the backend measures it."""
    lines = [
        f"measured: {rt.meta.get('method', rt.meta.get('backend', '?'))}, {rt.prompt_tokens} prompt + "
        f"{rt.new_tokens} new tokens, batch 1, fastest of {rt.repeats} after a warm-up"
    ]
    if rt.peak_memory_bytes is None or base_rt.peak_memory_bytes is None:
        lines.append(f"peak memory: {rt.meta.get('peak_memory', 'not measured')}")
    else:
        lines.append(
            f"peak memory: baseline {format_bytes(base_rt.peak_memory_bytes)}   {label}: "
            f"{format_bytes(rt.peak_memory_bytes)} ({rt.meta.get('peak_memory', '')})"
        )
    if rt.meta.get("note"):
        lines.append(f"note: {rt.meta['note']}")
    return lines


def _speed_columns(rt: RuntimeMeasurement, base_rt: RuntimeMeasurement) -> dict[str, Any]:
    return {
        "prefill_tokens_per_s": rt.prefill_tokens_per_s,
        "decode_tokens_per_s": rt.decode_tokens_per_s,
        "peak_memory_bytes": rt.peak_memory_bytes,
        "baseline_prefill_tokens_per_s": base_rt.prefill_tokens_per_s,
        "baseline_decode_tokens_per_s": base_rt.decode_tokens_per_s,
        "baseline_peak_memory_bytes": base_rt.peak_memory_bytes,
        "backend": rt.meta.get("backend", "hf"),
        "device": rt.device,
        "prompt_tokens": rt.prompt_tokens,
        "new_tokens": rt.new_tokens,
    }
