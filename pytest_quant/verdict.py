"""From two results and a budget to a verdict a release manager can read.

Logic layer: aligns the candidate's items with the reference's (same items or
an error), runs the paired statistics and writes the explanation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pytest_quant.budget import MemoryLimit, Mode, Ratio, Threshold, ValueFloor, format_bytes
from pytest_quant.errors import ResultError
from pytest_quant.results import TaskResult
from pytest_quant.stats import Degradation, clopper_pearson, paired_degradation

_EPS = 1e-12


@dataclass(frozen=True)
class Verdict:
    passed: bool
    mode: Mode
    limit: float  # the tolerated degradation, in the units of the Degradation
    statistic: float  # the number compared with the limit (estimate, lower or upper bound)
    reason: str


def decide(degradation: Degradation, limit: float, mode: Mode) -> Verdict:
    """Turn a degradation and a tolerated loss into a verdict.

    - ``point``: the estimate alone must be within the limit (what single-number CI gates do).
    - ``alarm``: fail only when the loss exceeds the limit with confidence (lower bound > limit);
      an underpowered run passes. For pre-merge checks that must not cry wolf.
    - ``gate``: pass only when the loss is within the limit with confidence (upper bound <= limit);
      an underpowered run fails. For release gates that must not let a regression through.
    """
    d = degradation
    if mode == "point":
        stat, ok = d.estimate, d.estimate <= limit + _EPS
        why = "estimate" + (" <= " if ok else " > ") + "budget"
    elif mode == "alarm":
        stat, ok = d.lower, not (d.lower > limit + _EPS)
        why = (
            f"{d.confidence:.0%} lower bound"
            + (" <= " if ok else " > ")
            + "budget"
            + ("" if ok else ": the loss exceeds the budget with confidence")
        )
    elif mode == "gate":
        stat, ok = d.upper, d.upper <= limit + _EPS
        why = (
            f"{d.confidence:.0%} upper bound"
            + (" <= " if ok else " > ")
            + "budget"
            + ("" if ok else ": the data cannot show the loss is within budget")
        )
    else:
        raise ValueError(f"mode must be 'point', 'alarm' or 'gate', got {mode!r}")
    return Verdict(ok, mode, limit, stat, why)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    explanation: str
    row: dict[str, Any] = field(default_factory=dict)
    degradation: Degradation | None = None
    verdict: Verdict | None = None


def validate_result(result: TaskResult, label: str) -> None:
    """Refuse results that must never pass: empty, non-finite, inconsistent."""
    if result.n == 0:
        raise ResultError(f"{label}: task {result.task!r} produced no items (was it skipped by the evaluator?)")
    if not math.isfinite(result.value):
        raise ResultError(f"{label}: task {result.task!r} metric {result.metric!r} is {result.value!r}")
    if len(result.item_ids) != result.n:
        raise ResultError(f"{label}: task {result.task!r} has {len(result.item_ids)} item ids for {result.n} scores")
    bad = [i for i, s in zip(result.item_ids, result.scores, strict=True) if not math.isfinite(s)]
    if bad:
        raise ResultError(
            f"{label}: task {result.task!r} has non-finite scores for {len(bad)} item(s), e.g. {bad[0]!r}"
        )


def align(
    reference: TaskResult, candidate: TaskResult, ref_label: str, cand_label: str, *, across_models: bool = False
):
    """Per-item arrays of both results in the reference's item order (same items or an error).

    ``across_models``: the two results come from different models, so prompts may differ where
    the text depends on the model (its chat template). They pair on the same documents
    (``meta["items_fingerprint"]``) when both results record it; a corpus-perplexity task,
    whose items are windows of each model's own tokens, pairs only when the tokenizers agree.
    """
    validate_result(reference, ref_label)
    validate_result(candidate, cand_label)
    if reference.metric != candidate.metric or reference.aggregation != candidate.aggregation:
        raise ResultError(
            f"{cand_label} reports {candidate.metric!r} ({candidate.aggregation}) but {ref_label} "
            f"reports {reference.metric!r} ({reference.aggregation})"
        )
    ref_docs, cand_docs = reference.meta.get("items_fingerprint"), candidate.meta.get("items_fingerprint")
    if across_models and ref_docs and cand_docs:
        if ref_docs != cand_docs:
            raise ResultError(
                f"{cand_label} and {ref_label} were evaluated on different documents for task {reference.task!r} "
                f"(items fingerprint {cand_docs} != {ref_docs}); a paired comparison needs the same items"
            )
    elif across_models and reference.meta.get("windows") is not None and reference.fingerprint != candidate.fingerprint:
        raise ResultError(
            f"{cand_label} and {ref_label} cannot be paired on corpus-perplexity task {reference.task!r}: its items "
            "are windows of each model's own tokens and the two tokenizers differ; compare the models on an lm-eval "
            "task (e.g. lambada_openai's perplexity, which scores the same words for every tokenizer)"
        )
    elif reference.fingerprint and candidate.fingerprint and reference.fingerprint != candidate.fingerprint:
        raise ResultError(
            f"{cand_label} and {ref_label} were evaluated on different items or prompts for task "
            f"{reference.task!r} (fingerprint {candidate.fingerprint} != {reference.fingerprint}); "
            "a paired comparison needs the same items"
        )
    pos = {item: i for i, item in enumerate(candidate.item_ids)}
    missing = [item for item in reference.item_ids if item not in pos]
    if missing:
        raise ResultError(
            f"{cand_label} has {len(missing)} fewer item(s) than {ref_label} on task {reference.task!r} "
            f"({candidate.n} vs {reference.n}; first missing: {missing[0]!r})"
        )
    extra = candidate.n - reference.n
    if extra:
        raise ResultError(
            f"{cand_label} has {extra} item(s) that {ref_label} lacks on task {reference.task!r}; "
            "the baseline must cover the same items"
        )
    order = [pos[item] for item in reference.item_ids]
    cand_scores = [candidate.scores[i] for i in order]
    cand_weights = None if candidate.weights is None else [candidate.weights[i] for i in order]
    return list(reference.scores), cand_scores, reference.weights, cand_weights


def _fmt(value: float, relative: bool, perplexity: bool) -> str:
    if relative:
        return f"{value * 100:+.2f}%"
    return f"{value * 100:+.2f}pp" if not perplexity else f"{value:+.4g}"


def judge(
    reference: TaskResult,
    candidate: TaskResult,
    *,
    threshold: Threshold | None,
    mode: Mode,
    confidence: float,
    method: str = "auto",
    ref_label: str = "baseline",
    cand_label: str = "quantized",
    seed: int = 0,
    across_models: bool = False,
) -> Outcome:
    """Is ``candidate`` within ``threshold`` of ``reference`` (``None`` = no worse at all)?"""
    ref_s, cand_s, ref_w, cand_w = align(reference, candidate, ref_label, cand_label, across_models=across_models)
    perplexity = reference.aggregation == "perplexity"
    relative = perplexity or (threshold is not None and threshold.kind == "relative")
    deg = paired_degradation(
        ref_s,
        cand_s,
        higher_is_better=reference.higher_is_better,
        aggregation=reference.aggregation,
        metric=reference.metric,
        reference_weights=ref_w,
        candidate_weights=cand_w,
        relative=relative,
        confidence=confidence,
        method=method,
        seed=seed,
    )
    limit = 0.0 if threshold is None else threshold.value
    verdict = decide(deg, limit, mode)
    budget_text = "no loss" if threshold is None else str(threshold)
    drop = _fmt(deg.estimate, relative, perplexity)
    lo, hi = _fmt(deg.lower, relative, perplexity), _fmt(deg.upper, relative, perplexity)
    flips = ""
    if deg.worse_items is not None:
        flips = f"; items worse/better: {deg.worse_items}/{deg.better_items}"
    lines = [
        f"{'PASS' if verdict.passed else 'FAIL'} [{mode}] {cand_label} vs {ref_label} on {reference.task} "
        f"({reference.metric}, n={deg.n})",
        f"  {ref_label}: {deg.reference_value:.4f}   {cand_label}: {deg.candidate_value:.4f}   "
        f"recovery: {deg.recovery * 100:.2f}%",
        f"  loss: {drop}  one-sided {confidence:.0%} bounds [{lo}, {hi}] ({deg.method}{flips})",
        f"  budget: loss <= {budget_text}; {verdict.reason}",
    ]
    substituted = candidate.meta.get("split_substituted") or reference.meta.get("split_substituted")
    if substituted:
        lines.append(f"  data: split substituted offline ({'; '.join(substituted)})")
    if deg.recovery > 1 and verdict.passed:
        lines.append("  (recovery above 100% is noise in the candidate's favour, not an improvement to claim)")
    row = {
        "task": reference.task,
        "metric": reference.metric,
        "baseline": deg.reference_value,
        "value": deg.candidate_value,
        "drop": deg.estimate,
        "ci_low": deg.lower,
        "ci_high": deg.upper,
        "relative": relative,
        "recovery": deg.recovery,
        "n": deg.n,
        "budget": budget_text,
        "mode": mode,
        "confidence": confidence,
        "method": deg.method,
        "verdict": "pass" if verdict.passed else "fail",
    }
    if substituted:
        row["split_substituted"] = list(substituted)
    return Outcome(verdict.passed, "\n".join(lines), row, deg, verdict)


def _mean_bounds(scores: tuple[float, ...], confidence: float) -> tuple[float, float, str]:
    """One-sided bounds (each at ``confidence``) on the mean of one model's per-item scores."""
    n = len(scores)
    if all(s in (0.0, 1.0) for s in scores):
        lo, hi = clopper_pearson(int(round(sum(scores))), n, confidence)
        return lo, hi, "clopper-pearson"
    from statistics import NormalDist

    mean = sum(scores) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else math.inf
    half = NormalDist().inv_cdf(confidence) * sd / math.sqrt(n)
    return mean - half, mean + half, "normal"


def judge_floor(
    candidate: TaskResult,
    floor: ValueFloor,
    *,
    mode: Mode,
    confidence: float,
    cand_label: str = "model",
) -> Outcome:
    """Is ``candidate``'s own value at least ``floor``? Not paired: the reference is one recorded number.

    ``point``: the value itself; ``alarm``: fail only when the upper bound on the value is
    below the floor; ``gate``: pass only when the lower bound reaches it. The bounds are
    on the candidate's mean over its items (Clopper-Pearson for 0/1 scores).
    """
    validate_result(candidate, cand_label)
    if candidate.aggregation != "mean" or not candidate.higher_is_better:
        raise ResultError(
            f"{cand_label}: a min_value floor needs a higher-is-better mean metric; task {candidate.task!r} reports "
            f"{candidate.metric!r} ({candidate.aggregation}, "
            f"{'higher' if candidate.higher_is_better else 'lower'} is better)"
        )
    value, limit = candidate.value, floor.floor
    lo, hi, method = _mean_bounds(candidate.scores, confidence)
    eps = 1e-12
    if mode == "point":
        ok, why = value >= limit - eps, "value" + (" >= " if value >= limit - eps else " < ") + "floor"
    elif mode == "alarm":
        ok = hi >= limit - eps
        why = f"{confidence:.0%} upper bound" + (
            " >= floor" if ok else " < floor: the value is below the floor with confidence"
        )
    elif mode == "gate":
        ok = lo >= limit - eps
        why = f"{confidence:.0%} lower bound" + (
            " >= floor" if ok else " < floor: the data cannot show the value reaches the floor"
        )
    else:
        raise ValueError(f"mode must be 'point', 'alarm' or 'gate', got {mode!r}")
    ref = floor.reference
    relative = ref != 0

    def loss(v: float) -> float:
        return (ref - v) / abs(ref) if relative else ref - v

    lines = [
        f"{'PASS' if ok else 'FAIL'} [{mode}] {cand_label} on {candidate.task} ({candidate.metric}, n={candidate.n})",
        f"  value: {value:.4f}   one-sided {confidence:.0%} bounds [{lo:.4f}, {hi:.4f}] ({method})",
        f"  budget: {floor}; {why}",
        "  (the floor derives from one recorded number: judged on this run's own items, not paired)",
    ]
    substituted = candidate.meta.get("split_substituted")
    if substituted:
        lines.append(f"  data: split substituted offline ({'; '.join(substituted)})")
    row = {
        "task": candidate.task,
        "metric": candidate.metric,
        "baseline": ref,  # the recorded value the floor derives from
        "value": value,
        "drop": loss(value),
        "ci_low": loss(hi),
        "ci_high": loss(lo),
        "relative": relative,
        "recovery": value / ref if relative else math.nan,
        "n": candidate.n,
        "budget": str(floor),
        "mode": mode,
        "confidence": confidence,
        "method": method,
        "verdict": "pass" if ok else "fail",
        "reference": "recorded value",
    }
    if substituted:
        row["split_substituted"] = list(substituted)
    return Outcome(
        ok,
        "\n".join(lines),
        row,
        None,
        Verdict(ok, mode, limit, value if mode == "point" else (hi if mode == "alarm" else lo), why),
    )


def both(first: Outcome, second: Outcome) -> Outcome:
    """Two claims on one item: it passes when both hold; the row is the second's (the paired one)."""
    passed = first.passed and second.passed
    budget = f"{first.row.get('budget')}; paired loss <= {second.row.get('budget')}"
    row = {**second.row, "budget": budget, "verdict": "pass" if passed else "fail"}
    return Outcome(passed, first.explanation + "\n" + second.explanation, row, second.degradation, second.verdict)


EFFICIENCY_TEXT = {
    "weight_memory": ("weight memory", "memory the weights take deployed: packed bits + scales/zero points"),
    "decode_tokens_per_s": ("decode speed", "tokens/s after the first, greedy generate, batch 1"),
    "prefill_tokens_per_s": ("prefill speed", "prompt tokens/s to the first new token, batch 1"),
}


def judge_efficiency(
    measurement: str,
    *,
    baseline: float,
    value: float,
    limit: MemoryLimit | Ratio,
    cand_label: str,
    details: tuple[str, ...] = (),
) -> Outcome:
    """Is a measured number within its budget? ``weight_memory`` (bytes, lower is better) against
    ``max_memory`` (a factor of the baseline's or a size), or a speed (tokens/s, higher is better)
    against a factor of the baseline's. A point comparison: measurements have no per-item scores.
    """
    what, meaning = EFFICIENCY_TEXT[measurement]
    memory = measurement == "weight_memory"
    if not (math.isfinite(baseline) and baseline > 0 and math.isfinite(value) and value >= 0):
        raise ResultError(f"{cand_label}: {what} cannot be judged (baseline {baseline!r}, {cand_label} {value!r})")
    ratio = value / baseline

    def show(v: float) -> str:
        return format_bytes(v) if memory else f"{v:,.1f} tok/s"

    if memory:
        assert isinstance(limit, MemoryLimit)
        bound = limit.limit(baseline)
        ok = value <= bound * (1 + 1e-12)
        budget = f"{what} <= {limit}" + (" baseline" if limit.ratio is not None else "")
        why = f"{show(value)} {'<=' if ok else '>'} {show(bound)}" + (
            f" ({ratio:.3f}x)" if limit.ratio is not None else ""
        )
    else:
        assert isinstance(limit, Ratio)
        bound = limit.factor * baseline
        ok = value >= bound * (1 - 1e-12)
        budget = f"{what} >= {limit} baseline"
        why = f"{ratio:.3f}x {'>=' if ok else '<'} {limit}"
    lines = [
        f"{'PASS' if ok else 'FAIL'} [point] {cand_label} vs baseline: {what} ({meaning})",
        f"  baseline: {show(baseline)}   {cand_label}: {show(value)}   ratio: {ratio:.3f}x",
        f"  budget: {budget}; {why}",
        "  (a measurement compared as a point, not paired statistics)",
        *(f"  {d}" for d in details),
    ]
    row = {
        "kind": "efficiency",
        "task": None,
        "metric": measurement,
        "unit": "bytes" if memory else "tokens/s",
        "baseline": baseline,
        "value": value,
        "ratio": ratio,
        "budget": budget,
        "mode": "point",
        "method": "measurement",
        "verdict": "pass" if ok else "fail",
    }
    return Outcome(ok, "\n".join(lines), row, None, Verdict(ok, "point", bound, value, why))
