"""Running one check: a budget applied to one scheme (or comparison) on one task.

:func:`run_check` gathers the two results a check compares (the scheme's evaluation, the
stored baseline, another scheme, a reference model's baseline, a recorded value, or two
efficiency measurements) and hands them to :mod:`pytest_quant.verdict`. :func:`stamp` is the
one place a result row gets its identity (suite, model, scheme, item), for every kind of row:
judged, errored, or from the ``quant_check`` fixture.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pytest_quant.artifacts import checkpoint_loading, footprint, weight_columns
from pytest_quant.budget import Mode, Threshold, format_bytes
from pytest_quant.config import BASELINE, EvaluationConfig, ModelConfig, ResolvedEvaluation, SchemeConfig, SuiteConfig
from pytest_quant.errors import EXPLAINED, BackendUnavailable, QuantConfigError
from pytest_quant.evaluation import baseline, choose_backend, evaluate, evaluate_stages, runtime
from pytest_quant.results import RuntimeMeasurement, TaskResult
from pytest_quant.sequential import plan_of, prefix, spending_shares, stage_confidence, worker_order
from pytest_quant.session import QuantSession
from pytest_quant.stats import holm_rejections
from pytest_quant.suite import Check, expand_checks
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
    resolved = _on_backend(session, suite, check, source)
    if budget.efficiency is not None:
        outcome = _efficiency(session, resolved, check, source=source)
    else:
        # a parity item is upstream's point rule, whatever --quant-mode says
        mode = "point" if budget.parity is not None else session.resolve_mode(budget.mode, suite.mode)
        confidence = session.resolve_confidence(budget.confidence, suite.confidence)
        outcome = _judge(session, resolved, check, mode=mode, confidence=confidence, source=source)
        if mode == "alarm" and budget.parity is None:
            outcome = _in_family(session, suite, check, outcome, confidence=confidence, source=source)
    outcome = _with_backend(outcome, resolved.evaluation)
    outcome = _with_loading(session, resolved, check, outcome, source=source)
    _stamp_check(outcome.row, suite, check, source=source, item=item, position=position)
    return outcome


def _on_backend(session: QuantSession, suite: SuiteConfig, check: Check, source: str) -> SuiteConfig:
    """``suite`` with ``backend: auto`` resolved for ``check`` (:func:`choose_backend`): every model the
    check reads (its schemes, the model as is, reference models it compares with) on one backend."""
    if suite.evaluation.backend != "auto" and session.options.backend != "auto":
        return suite
    tasks = check.pool or ((check.task,) if check.task else tuple(suite.tasks))
    if check.budget.efficiency is None and all(suite.tasks[t].kind != "lm_eval" for t in tasks):
        return suite  # perplexity and divergence tasks run in this process whatever the backend
    staged = [t for t in tasks if suite.tasks[t].sequential is not None]
    if staged:
        raise QuantConfigError(
            f"task {staged[0]!r} is staged (sequential) and --quant-backend auto chooses a backend per budget; "
            "a staged task's stops are decided on one backend for all its budgets: use --quant-backend hf or vllm",
            field=f"tasks.{staged[0]}.sequential",
        )
    models: list[tuple[ModelConfig, SchemeConfig | None]] = [(suite.model, None)]
    for name in check.sides:
        if name in suite.schemes:
            models.append((suite.model, suite.schemes[name]))
        elif name in suite.references:
            models.append((suite.references[name].as_model(), None))
    evaluation = choose_backend(session, models, suite.evaluation, source=source)
    return suite.model_copy(update={"evaluation": evaluation})


def _with_backend(outcome: Outcome, evaluation: EvaluationConfig) -> Outcome:
    """Under ``backend: auto``, the row and the explanation say which backend judged, and why not vLLM."""
    if not isinstance(evaluation, ResolvedEvaluation):
        return outcome
    row = {**outcome.row, "backend": evaluation.backend}
    line = f"  backend: {evaluation.backend} (auto)"
    if evaluation.fallback:
        row["backend_fallback"] = evaluation.fallback
        line = f"  backend: hf (auto fell back from vLLM: {evaluation.fallback})"
    return replace(outcome, row=row, explanation=f"{outcome.explanation}\n{line}")


def _with_loading(session: QuantSession, suite: SuiteConfig, check: Check, outcome: Outcome, *, source: str) -> Outcome:
    """A ``checkpoint:`` scheme's row and explanation say how it was loaded: as is, dequantized by
    pytest-quant (from which format), or converted from GGUF."""
    loaded: dict[str, str] = {}
    for name in _sides(suite, check):
        how = checkpoint_loading(session, suite.model, suite.schemes[name], suite.evaluation.device, source=source)
        if how:
            loaded[name] = how
    if not loaded:
        return outcome
    compared = check.budget.compare is not None
    text = "; ".join(f"{n}: {h}" for n, h in loaded.items()) if compared else next(iter(loaded.values()))
    row = {**outcome.row, "checkpoint_loading": text}
    return replace(outcome, row=row, explanation=f"{outcome.explanation}\n  checkpoint loaded {text}")


def _judge(
    session: QuantSession, suite: SuiteConfig, check: Check, *, mode: Mode, confidence: float, source: str
) -> Outcome:
    """The check's outcome on its own, at ``confidence`` (a sequential task: at the stage that decided it)."""
    budget = check.budget
    if budget.min_value is not None:
        return _floor(session, suite, check, mode=mode, confidence=confidence, source=source)
    if budget.max_kld is not None or budget.min_top1_agreement is not None:
        return _divergence_claim(session, suite, check, mode=mode, confidence=confidence, source=source)
    if check.pool:
        return _pooled(session, suite, check, mode=mode, confidence=confidence, source=source)
    if _sequential_task(suite, check):
        return _sequential(session, suite, check, mode=mode, confidence=confidence, source=source)
    return _paired(session, suite, check, mode=mode, confidence=confidence, source=source)


# What makes a check unjudgeable (its own item raises it when it runs).
_UNJUDGED: tuple[type[BaseException], ...] = (*EXPLAINED, BackendUnavailable)


# -- sequential evaluation: judge after each stage, stop when the task's budgets are decided ------------------
@dataclass(frozen=True)
class StageDecisions:
    """Where a sequential task's budgets were decided (1-based stage), and how many items each scheme took."""

    sizes: tuple[int, ...]
    spending: str
    decided: dict[str, int]
    evaluated: dict[str, int]
    futile: dict[str, int] = field(default_factory=dict)  # stopped as undecidable at max (futility)


def _sequential_task(suite: SuiteConfig, check: Check) -> bool:
    return check.task is not None and not check.pool and suite.tasks[check.task].sequential is not None


def _sides(suite: SuiteConfig, check: Check) -> tuple[str, ...]:
    """The schemes a check evaluates (not the stored baseline or a reference model's)."""
    return tuple(n for n in check.sides if n in suite.schemes)


def stage_decisions(session: QuantSession, suite: SuiteConfig, task_name: str, source: str) -> StageDecisions:
    """Run a sequential task's stages: after each, judge every open alarm/gate budget on the task at the
    stage's share of its error rate; a budget is decided at the first stage whose bounds show it within
    or violated. A scheme is evaluated on a stage only while a budget that reads it is open. Computed once
    per run (deterministic: every xdist worker reaches the same stops from the same cached chunks)."""
    key = ("stages", source, suite.name, task_name)
    if key in session.decisions:
        return session.decisions[key]
    task = suite.tasks[task_name]
    assert task.sequential is not None
    base = baseline(session, suite.model, task, suite.evaluation, seed=suite.seed)
    plan = plan_of(base, task.sequential, suite.model.name)
    checks = [
        c for c in expand_checks(suite)
        if c.task == task_name and not c.pool and c.budget.parity is None and c.budget.efficiency is None
        and c.budget.min_value is None  # a floor on a value reads the whole task (see _floor)
        and (source not in session.selected or c.name in session.selected[source])  # deselected: not run
    ]  # fmt: skip
    decided: dict[str, int] = {}
    futile: dict[str, int] = {}
    broken: set[str] = set()
    evaluated: dict[str, int] = {}
    for stage in range(1, plan.stages + 1):
        active = []
        for c in checks:
            mode = session.resolve_mode(c.budget.mode, suite.mode)
            if mode != "point" and c.name not in decided and c.name not in broken and c.name not in futile:
                active.append((c, mode))
        if not active:
            break
        # this stage's evaluations first, each xdist worker starting on a different scheme
        needed = [name for name in suite.schemes if any(name in _sides(suite, c) for c, _ in active)]
        for name in worker_order(needed):
            try:
                _result(session, suite, name, task_name, source, stage)
            except _UNJUDGED:  # judging the check that reads it records it as broken
                pass
        for c, mode in active:
            confidence = session.resolve_confidence(c.budget.confidence, suite.confidence)
            _, at = _at_stage(plan.sizes, task.sequential.spending, confidence, stage)
            try:
                outcome = _paired(session, suite, c, mode=mode, confidence=at, source=source, stage=stage)
            except _UNJUDGED:  # the item itself raises it when it runs
                broken.add(c.name)
                continue
            for name in _sides(suite, c):
                evaluated[name] = max(evaluated.get(name, 0), plan.sizes[stage - 1])
            if outcome.verdict is not None and outcome.verdict.evidence != "inconclusive":
                decided[c.name] = stage
            elif task.sequential.futility and stage < plan.stages and _futile(outcome, plan.sizes[-1]):
                futile[c.name] = stage
    result = StageDecisions(plan.sizes, task.sequential.spending, decided, evaluated, futile)
    session.decisions[key] = result
    return result


def _futile(outcome: Outcome, most: int) -> bool:
    """Whether an inconclusive budget would stay undecided at ``most`` items if its loss stayed at its estimate
    (with the per-item spread as measured): the items-needed figure every inconclusive verdict states."""
    needed = outcome.verdict.items_needed if outcome.verdict is not None else None
    return needed is not None and needed > most


def _at_stage(sizes: tuple[int, ...], spending: str, confidence: float, stage: int) -> tuple[float, float]:
    """Stage ``stage``'s share of the error rate ``1 - confidence``, and the confidence of its bounds."""
    share = spending_shares(sizes, spending, 1.0 - confidence)[stage - 1]
    return share, stage_confidence(confidence, share)


def _sequential(
    session: QuantSession, suite: SuiteConfig, check: Check, *, mode: Mode, confidence: float, source: str
) -> Outcome:
    """A budget on a sequential task, judged at the stage that decided it (or the last) with that stage's bounds."""
    task_name = str(check.task)
    dec = stage_decisions(session, suite, task_name, source)
    last = len(dec.sizes)
    stage = last if mode == "point" else dec.decided.get(check.name, dec.futile.get(check.name, last))
    share, at = _at_stage(dec.sizes, dec.spending, confidence, stage)
    at = confidence if mode == "point" else at
    outcome = _paired(session, suite, check, mode=mode, confidence=at, source=source, stage=stage)
    took = ", ".join(f"{name} {dec.evaluated.get(name, dec.sizes[-1])}" for name in _sides(suite, check))
    if mode == "point":
        line = f"  sequential: a point verdict decides nothing early: all {last} stages ({dec.sizes[-1]} items)"
    elif check.name in dec.decided:
        line = (
            f"  sequential: decided at stage {stage} of {last} ({dec.sizes[stage - 1]} of {dec.sizes[-1]} items), "
            f"bounds at {at:.2%} ({share:.3g} of the {1 - confidence:.0%} error rate, {dec.spending} spending)"
        )
    elif check.name in dec.futile:
        line = (
            f"  sequential: stopped at stage {stage} of {last} ({dec.sizes[stage - 1]} of {dec.sizes[-1]} items) "
            f"for futility: {dec.sizes[-1]} items would not decide it if the loss stayed at its estimate; "
            f"bounds at {at:.2%} ({share:.3g} of the {1 - confidence:.0%} error rate, {dec.spending} spending)"
        )
    else:
        line = (
            f"  sequential: not decided at any of {last} stages ({dec.sizes[-1]} items); the last stage's bounds "
            f"at {at:.2%} ({share:.3g} of the {1 - confidence:.0%} error rate, {dec.spending} spending)"
        )
    line += f"; items evaluated: {took}" if took else ""
    row = {
        **outcome.row,
        "nominal_confidence": confidence,
        "sequential": {
            "stage": stage, "stages": last, "n": dec.sizes[stage - 1], "max": dec.sizes[-1],
            "decided": check.name in dec.decided, "futile": check.name in dec.futile, "spending": dec.spending,
            "evaluated": dict(dec.evaluated),
        },
    }  # fmt: skip
    return replace(outcome, explanation=f"{outcome.explanation}\n{line}", row=row)


# -- one family of alarms per suite: Holm's step-down correction ----------------------------------------------
def _rejects(session: QuantSession, suite: SuiteConfig, check: Check, source: str, confidence: float) -> Any:
    """``check``'s alarm as a test of its budget at ``share`` of its error rate (for Holm): True when the
    data show a violation. A check that cannot be judged rejects nothing."""
    alpha = 1.0 - confidence

    def test(share: float) -> bool:
        try:
            if not _sequential_task(suite, check):
                at = 1.0 - alpha * share
                outcome = _judge(session, suite, check, mode="alarm", confidence=at, source=source)
                return outcome.verdict is not None and outcome.verdict.evidence == "violated"
            dec = stage_decisions(session, suite, str(check.task), source)
            examined = dec.decided.get(check.name, dec.futile.get(check.name, len(dec.sizes)))
            for stage in range(1, examined + 1):
                _, at = _at_stage(dec.sizes, dec.spending, 1.0 - alpha * share, stage)
                outcome = _paired(session, suite, check, mode="alarm", confidence=at, source=source, stage=stage)
                if outcome.verdict is not None and outcome.verdict.evidence == "violated":
                    return True
            return False
        except _UNJUDGED:
            return False

    return test


def _confidence(session: QuantSession, suite: SuiteConfig, check: Check) -> float:
    return session.resolve_confidence(check.budget.confidence, suite.confidence)


def _family_test(session: QuantSession, suite: SuiteConfig, check: Check, source: str, confidence: float) -> Any:
    """:func:`_rejects` on the backend ``check`` is judged on; one that cannot be judged rejects nothing."""
    try:
        resolved = _on_backend(session, suite, check, source)
    except _UNJUDGED:
        return lambda share: False
    return _rejects(session, resolved, check, source, confidence)


def _in_family(
    session: QuantSession, suite: SuiteConfig, check: Check, outcome: Outcome, *, confidence: float, source: str
) -> Outcome:
    """An alarm judged with the suite's other alarms (``--quant-family suite``): it fails only where Holm's
    step-down correction over the family's tests rejects it, so the chance of any false alarm in the suite
    stays at the error rate. A violation shown alone but not after the correction passes, and says so."""
    family = session.families.get(source, ())
    if session.options.family != "suite" or check.name not in family or len(family) < 2:
        return replace(outcome, row={**outcome.row, "family": {"size": 1, "correction": "none"}})
    row = {**outcome.row, "family": {"size": len(family), "correction": "holm"}}
    if outcome.verdict is None or outcome.verdict.evidence != "violated":
        return replace(outcome, row=row)  # Holm rejects nothing its own test does not
    key = ("holm", source, suite.name)
    if key not in session.decisions:
        by_name = {c.name: c for c in expand_checks(suite) if c.name in family}
        tests = {
            name: _family_test(session, suite, c, source, _confidence(session, suite, c)) for name, c in by_name.items()
        }
        session.decisions[key] = holm_rejections(tests)
    rejected: dict[str, int] = session.decisions[key]
    m = len(family)
    alpha = 1.0 - confidence
    if check.name in rejected:
        step = rejected[check.name]
        line = (
            f"  family: Holm's correction across the suite's {m} alarms rejects it at step {step} "
            f"(level {alpha:.0%}/{m - step + 1} = {alpha / (m - step + 1):.3%}): the chance of any false alarm "
            f"in the suite stays at {alpha:.0%}"
        )
        row["family"]["step"] = step
        return replace(outcome, explanation=f"{outcome.explanation}\n{line}", row=row)
    lines = outcome.explanation.split("\n")
    lines[0] = lines[0].replace("FAIL [alarm]", "PASS [alarm]", 1)
    note = (
        f"  evidence: inconclusive across the suite: alone its {confidence:.0%} lower bound shows a violation, but "
        f"Holm's correction across the suite's {m} alarms ({len(rejected)} rejected; this one needed "
        f"{alpha:.0%}/{m - len(rejected)}) does not (--quant-family item judges it alone)"
    )
    lines = [note if ln.startswith("  evidence:") else ln for ln in lines]
    row.update({"verdict": "pass", "evidence": "inconclusive", "evidence_alone": "violated"})
    verdict = replace(outcome.verdict, passed=True, evidence="inconclusive") if outcome.verdict else None
    return replace(outcome, passed=True, explanation="\n".join(lines), row=row, verdict=verdict)


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


def _result(
    session: QuantSession, suite: SuiteConfig, name: str, task: str, source: str, stage: int | None = None
) -> TaskResult:
    """The result a comparison names: the baseline, a reference model's baseline, or a scheme's evaluation
    (on a sequential task with ``stage``: its first ``stage`` stages)."""
    config = suite.tasks[task]
    if name == BASELINE or name in suite.references:
        model, evaluation = (suite.model, suite.evaluation) if name == BASELINE else suite.reference_run(name)
        base = baseline(session, model, config, evaluation, seed=suite.seed)  # another model: its own baseline
        if stage is None or config.sequential is None:
            return base
        return prefix(base, plan_of(base, config.sequential, model.name), stage)
    if stage is not None and config.sequential is not None:
        base = baseline(session, suite.model, config, suite.evaluation, seed=suite.seed)
        return evaluate_stages(
            session, suite.model, suite.schemes[name], config, suite.evaluation, base, stage, seed=suite.seed,
            source=source,
        )  # fmt: skip
    return evaluate(session, suite.model, suite.schemes[name], config, suite.evaluation, seed=suite.seed, source=source)


def _paired(
    session: QuantSession,
    suite: SuiteConfig,
    check: Check,
    *,
    mode: Mode,
    confidence: float,
    source: str,
    stage: int | None = None,
) -> Outcome:
    """A loss budget against the baseline, or a comparison of two schemes / models, item by item
    (on a sequential task with ``stage``: on the items of its first ``stage`` stages)."""
    budget, task = check.budget, str(check.task)
    if budget.compare is not None:
        cmp = budget.compare
        reference, candidate = (
            _result(session, suite, cmp.worse, task, source, stage),
            _result(session, suite, cmp.better, task, source, stage),
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
        _result(session, suite, BASELINE, task, source, stage),
        _result(session, suite, scheme, task, source, stage),
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
