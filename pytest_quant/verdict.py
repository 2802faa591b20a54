"""From two results and a budget to a verdict a release manager can read.

Logic layer: aligns the candidate's items with the reference's (same items or an error), runs
the paired statistics and writes the explanation. Every verdict carries its **evidence**, what
the data support whatever the mode: ``within`` (the upper bound is within budget: shown),
``violated`` (the lower bound is beyond it: shown), or ``inconclusive`` (neither; with the number
of items that would decide it, if the loss and its spread stay as measured). The pytest outcome
follows the mode: ``gate`` passes only on ``within``, ``alarm`` fails only on ``violated``,
``point`` compares the estimate.

Nothing that cannot be judged passes: empty or inconsistent results, non-finite values or
bounds, non-positive weights, a unit that does not fit the metric and a relative budget against
a zero baseline are :class:`~pytest_quant.errors.ResultError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_quant.budget import MemoryLimit, Mode, Ratio, Threshold, ValueFloor, format_bytes
from pytest_quant.errors import ResultError
from pytest_quant.results import TaskResult
from pytest_quant.stats import (
    MIN_CONTINUOUS_ITEMS,
    MIN_ITEMS_NOTE,
    Degradation,
    clopper_pearson,
    items_to_decide,
    paired_degradation,
    studentized_bounds,
)

_EPS = 1e-12
Evidence = Literal["within", "violated", "inconclusive"]
EVIDENCE_TEXT = {
    "within": "within budget (shown)",
    "violated": "budget violated (shown)",
    "inconclusive": "inconclusive: no violation shown, within budget not shown",
}


@dataclass(frozen=True)
class Verdict:
    passed: bool
    mode: Mode
    limit: float  # the tolerated degradation, in the units of the Degradation
    statistic: float  # the number compared with the limit (estimate, lower or upper bound)
    reason: str
    evidence: Evidence = "inconclusive"
    items_needed: float | None = None  # for an inconclusive verdict: items that would decide it
    evidence_note: str = ""  # why it is inconclusive / what would decide it

    @property
    def evidence_line(self) -> str:
        """``evidence: ...`` as the explanation prints it."""
        return f"evidence: {EVIDENCE_TEXT[self.evidence]}" + (f"; {self.evidence_note}" if self.evidence_note else "")


def percent(confidence: float) -> str:
    """A confidence as the text shows it: ``95%``, or ``98.75%`` for a stage's share of one."""
    return f"{confidence * 100:.4g}%"


def evidence_of(lower: float, upper: float, limit: float, trusted: bool = True) -> Evidence:
    """What bounds on a loss say about a tolerated ``limit`` (nothing, when they are not trusted)."""
    if not trusted:
        return "inconclusive"
    if lower > limit + _EPS:
        return "violated"
    return "within" if upper <= limit + _EPS else "inconclusive"


def decide(degradation: Degradation, limit: float, mode: Mode) -> Verdict:
    """Turn a degradation and a tolerated loss into a verdict (see the module docstring).

    Non-finite numbers never pass, in any mode: they are a ResultError.
    """
    d = degradation
    values = {"estimate": d.estimate, "lower bound": d.lower, "upper bound": d.upper, "budget": limit}
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise ResultError(f"the loss cannot be judged: {', '.join(f'{k} {v!r}' for k, v in bad.items())}")
    evidence = evidence_of(d.lower, d.upper, limit, d.trusted)
    needed = items_to_decide(d, limit) if evidence == "inconclusive" and d.trusted else None
    c = percent(d.confidence)
    if mode == "point":
        ok = d.estimate <= limit + _EPS
        stat, why = d.estimate, "estimate" + (" <= " if ok else " > ") + "budget"
    elif mode == "alarm":
        ok = evidence != "violated"
        stat = d.lower
        why = f"{c} lower bound" + (
            " > budget: the loss exceeds the budget with confidence" if not ok else " <= budget"
        )
    elif mode == "gate":
        ok = evidence == "within"
        stat = d.upper
        if ok:
            why = f"{c} upper bound <= budget: the loss is within budget with confidence"
        elif evidence == "violated":
            why = f"{c} lower bound > budget: the loss exceeds the budget with confidence"
        else:
            why = f"{c} upper bound > budget: the data cannot show the loss is within budget"
    else:
        raise ValueError(f"mode must be 'point', 'alarm' or 'gate', got {mode!r}")
    note = ""
    if not d.trusted:
        note = f"{d.n} items are too few to decide: {MIN_ITEMS_NOTE}"
    elif needed is not None:
        note = _needed_text(needed, d)
    return Verdict(ok, mode, limit, stat, why, evidence, needed, note)


def _needed_text(needed: float, d: Degradation) -> str:
    if not math.isfinite(needed):
        return "no number of items decides it while the loss sits on the budget"
    at = f"at the measured flip rate ({d.flip_rate:.1%})" if d.flip_rate is not None else "at the measured spread"
    return f"about {int(needed)} items would decide it {at}, if the loss stays at its estimate"


def bounded_verdict(
    value: float,
    lower: float,
    upper: float,
    limit: float,
    *,
    at_most: bool,
    mode: Mode,
    confidence: float,
    trusted: bool = True,
    note: str = "",
    stat_name: str = "estimate",
    limit_name: str = "budget",
    violated: str = "the budget is violated with confidence",
    not_shown: str = "the data cannot show it is within budget",
    shown: str = "",
) -> Verdict:
    """A value with one-sided bounds (each at ``confidence``) against a limit it must stay at or below
    (``at_most``) or at or above: the one decision rule of floors, flip shares and divergence budgets.
    ``gate`` passes only when the favourable bound is within the limit, ``alarm`` fails only when the
    unfavourable one is beyond it, ``point`` compares the value; the phrases name what was judged."""
    if at_most:
        evidence = evidence_of(lower, upper, limit, trusted)
        ok_op, bad_op, beyond, favourable = "<=", ">", lower, upper
        point_ok = value <= limit + _EPS
    else:  # as a shortfall below the limit
        evidence = evidence_of(limit - upper, limit - lower, 0.0, trusted)
        ok_op, bad_op, beyond, favourable = ">=", "<", upper, lower
        point_ok = value >= limit - _EPS
    c = percent(confidence)
    if mode == "point":
        ok, stat = point_ok, value
        why = f"{stat_name} {ok_op if ok else bad_op} {limit_name}"
    elif mode == "alarm":
        ok, stat = evidence != "violated", beyond
        side = "lower" if at_most else "upper"
        why = f"{c} {side} bound " + (f"{ok_op} {limit_name}" if ok else f"{bad_op} {limit_name}: {violated}")
    elif mode == "gate":
        ok, stat = evidence == "within", favourable
        side = "upper" if at_most else "lower"
        why = f"{c} {side} bound " + (f"{ok_op} {limit_name}{shown}" if ok else f"{bad_op} {limit_name}: {not_shown}")
    else:
        raise ValueError(f"mode must be 'point', 'alarm' or 'gate', got {mode!r}")
    return Verdict(ok, mode, limit, stat, why, evidence, None, note)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    explanation: str
    row: dict[str, Any] = field(default_factory=dict)
    degradation: Degradation | None = None
    verdict: Verdict | None = None


def validate_result(result: TaskResult, label: str) -> None:
    """Refuse results that must never pass: empty, non-finite, inconsistent, weights that are not positive."""
    if result.n == 0:
        raise ResultError(f"{label}: task {result.task!r} produced no items (was it skipped by the evaluator?)")
    if not math.isfinite(result.value):
        raise ResultError(f"{label}: task {result.task!r} metric {result.metric!r} is {result.value!r}")
    if len(result.item_ids) != result.n:
        raise ResultError(f"{label}: task {result.task!r} has {len(result.item_ids)} item ids for {result.n} scores")
    if len(set(result.item_ids)) != result.n:
        raise ResultError(f"{label}: task {result.task!r} lists an item twice; items must be unique")
    bad = [i for i, s in zip(result.item_ids, result.scores, strict=True) if not math.isfinite(s)]
    if bad:
        raise ResultError(
            f"{label}: task {result.task!r} has non-finite scores for {len(bad)} item(s), e.g. {bad[0]!r}"
        )
    if result.weights is not None:
        if len(result.weights) != result.n:
            raise ResultError(f"{label}: task {result.task!r} has {len(result.weights)} weights for {result.n} scores")
        wrong = [i for i, w in zip(result.item_ids, result.weights, strict=True) if not (math.isfinite(w) and w > 0)]
        if wrong:
            raise ResultError(
                f"{label}: task {result.task!r} has {len(wrong)} item(s) whose weight (tokens, words or bytes) is "
                f"not a positive number, e.g. {wrong[0]!r}: such an item cannot enter a perplexity"
            )


def align(
    reference: TaskResult, candidate: TaskResult, ref_label: str, cand_label: str, *, across_models: bool = False
) -> tuple[list[float], list[float], tuple[float, ...] | None, list[float] | None]:
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
    _same_items(reference, candidate, ref_label, cand_label, across_models)
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


def _same_items(reference: TaskResult, candidate: TaskResult, ref_label: str, cand_label: str, across: bool) -> None:
    ref_docs, cand_docs = reference.meta.get("items_fingerprint"), candidate.meta.get("items_fingerprint")
    if across and ref_docs and cand_docs:
        if ref_docs != cand_docs:
            raise ResultError(
                f"{cand_label} and {ref_label} were evaluated on different documents for task {reference.task!r} "
                f"(items fingerprint {cand_docs} != {ref_docs}); a paired comparison needs the same items"
            )
    elif across and reference.meta.get("windows") is not None and reference.fingerprint != candidate.fingerprint:
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


def _fmt(value: float, relative: bool, raw: bool) -> str:
    if relative:
        return f"{value * 100:+.2f}%"
    return f"{value * 100:+.2f}pp" if not raw else f"{value:+.4g}"


def _proportion(reference: TaskResult, candidate: TaskResult) -> bool:
    """Whether both results are means of 0..1 scores, the metrics whose differences are points (pp)."""
    return reference.aggregation == "mean" and all(0.0 <= s <= 1.0 for s in (*reference.scores, *candidate.scores))


def _validate_unit(reference: TaskResult, candidate: TaskResult, threshold: Threshold | None) -> None:
    """Units are never guessed: points (``pp``) are points of a 0..1 metric, nothing else."""
    if threshold is None or threshold.kind != "absolute":
        return
    if not _proportion(reference, candidate):
        what = (
            "a perplexity-type metric (lower is better, no 0..1 scale)"
            if reference.aggregation == "perplexity"
            else "not a 0..1 proportion (its per-item scores leave [0, 1])"
        )
        raise ResultError(
            f"budget {threshold} on task {reference.task!r}: 'pp' means percentage points of a 0..1 metric, and "
            f"{reference.metric!r} is {what}; state the budget relative to the baseline in '%'"
        )


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
    _validate_unit(reference, candidate, threshold)
    perplexity = reference.aggregation == "perplexity"
    relative = perplexity or (threshold is not None and threshold.kind == "relative")
    try:
        deg = paired_degradation(
            ref_s, cand_s, higher_is_better=reference.higher_is_better, aggregation=reference.aggregation,
            metric=reference.metric, reference_weights=ref_w, candidate_weights=cand_w, relative=relative,
            confidence=confidence, method=method, seed=seed,
        )  # fmt: skip
    except ZeroDivisionError:
        raise ResultError(
            f"budget {threshold} on task {reference.task!r} is relative to {ref_label}'s value, which is 0 on these "
            f"{reference.n} items: nothing can be lost relative to it. State the budget in points (pp) instead"
        ) from None
    except ValueError as exc:
        raise ResultError(f"{cand_label} vs {ref_label} on task {reference.task!r}: {exc}") from None
    verdict = decide(deg, 0.0 if threshold is None else threshold.value, mode)
    # a difference of a metric that is not a 0..1 proportion (MT-Bench's 1..10 ratings) is shown as it is,
    # never as points (x100)
    raw = perplexity or not _proportion(reference, candidate)
    return _paired_outcome(reference, candidate, deg, verdict, threshold, ref_label, cand_label, raw)


def _paired_outcome(
    reference: TaskResult,
    candidate: TaskResult,
    deg: Degradation,
    verdict: Verdict,
    threshold: Threshold | None,
    ref_label: str,
    cand_label: str,
    raw: bool,
) -> Outcome:
    budget_text = "no loss" if threshold is None else str(threshold)
    relative = deg.relative
    drop = _fmt(deg.estimate, relative, raw)
    lo, hi = _fmt(deg.lower, relative, raw), _fmt(deg.upper, relative, raw)
    flips = "" if deg.worse_items is None else f"; items worse/better: {deg.worse_items}/{deg.better_items}"
    flip_text, flip_fields = (
        flip_line(deg.worse_items, deg.better_items or 0, deg.n, deg.confidence)
        if deg.worse_items is not None
        else ("", {})
    )
    lines = [
        f"{'PASS' if verdict.passed else 'FAIL'} [{verdict.mode}] {cand_label} vs {ref_label} on {reference.task} "
        f"({reference.metric}, n={deg.n})",
        f"  {ref_label}: {deg.reference_value:.4f}   {cand_label}: {deg.candidate_value:.4f}   "
        f"recovery: {deg.recovery * 100:.2f}%",
        f"  loss: {drop}  one-sided {percent(deg.confidence)} bounds [{lo}, {hi}] ({deg.method}{flips})",
        f"  budget: loss <= {budget_text}; {verdict.reason}",
        f"  {verdict.evidence_line}",
    ]
    if flip_text:  # every 0/1 comparison says how many answers changed, budget or not
        lines.insert(3, flip_text)
    substituted = candidate.meta.get("split_substituted") or reference.meta.get("split_substituted")
    if substituted:
        lines.append(f"  data: split substituted offline ({'; '.join(substituted)})")
    if deg.recovery > 1 and verdict.passed:
        lines.append("  (recovery above 100% is noise in the candidate's favour, not an improvement to claim)")
    row = {
        "task": reference.task, "metric": reference.metric, "baseline": deg.reference_value,
        "value": deg.candidate_value, "drop": deg.estimate, "ci_low": deg.lower, "ci_high": deg.upper,
        "relative": relative, "recovery": deg.recovery, "higher_is_better": deg.higher_is_better, "n": deg.n,
        "budget": budget_text, "mode": verdict.mode, "confidence": deg.confidence, "method": deg.method,
        "verdict": "pass" if verdict.passed else "fail", "evidence": verdict.evidence,
        "items_needed": _count(verdict.items_needed), "flip_rate": deg.flip_rate,
        "spread": deg.spread if math.isfinite(deg.spread) else None, **flip_fields,
    }  # fmt: skip
    if substituted:
        row["split_substituted"] = list(substituted)
    if raw and not relative:
        row["points"] = False  # the loss is a difference of the metric itself, not points of a proportion
    return Outcome(verdict.passed, "\n".join(lines), row, deg, verdict)


def llmcompressor_recovery_passes(base_value: float, candidate_value: float, recovery: float) -> bool:
    """llm-compressor's own rule (tests/lmeval/test_lmeval.py ``_validate_recovery``):
    ``round(candidate / base, 2) >= threshold``, recovery rounded to the nearest percent first."""
    return round(candidate_value / base_value, 2) >= recovery


def judge_parity(
    reference: TaskResult,
    candidate: TaskResult,
    *,
    threshold: Threshold,
    confidence: float,
    method: str = "auto",
    cand_label: str = "quantized",
    seed: int = 0,
) -> Outcome:
    """An upstream gate's decision reproduced exactly (llm-compressor's rounded recovery on the two
    aggregate values), with the paired bounds beside it as evidence: the pytest outcome is upstream's."""
    if not (math.isfinite(reference.value) and math.isfinite(candidate.value)):
        raise ResultError(
            f"{cand_label} vs baseline on task {reference.task!r}: values {reference.value!r} / {candidate.value!r} "
            "cannot be judged"
        )
    if reference.value == 0:
        raise ResultError(
            f"llm-compressor's recovery on task {reference.task!r} divides by the baseline's value, which is 0"
        )
    paired = judge(
        reference, candidate, threshold=threshold, mode="point", confidence=confidence, method=method,
        cand_label=cand_label, seed=seed,
    )  # fmt: skip
    recovery = round(1.0 - threshold.value, 10)  # the threshold as written ("94%"), without float residue
    ratio = candidate.value / reference.value
    ok = llmcompressor_recovery_passes(reference.value, candidate.value, recovery)
    assert paired.verdict is not None
    v = paired.verdict
    why = f"round({ratio:.4f}, 2) = {round(ratio, 2):.2f} {'>=' if ok else '<'} {recovery:.2f}"
    verdict = Verdict(ok, "point", v.limit, round(ratio, 2), why, v.evidence, v.items_needed, v.evidence_note)
    lines = paired.explanation.splitlines()
    lines[0] = f"{'PASS' if ok else 'FAIL'} [parity]" + lines[0].split("]", 1)[1]  # "PASS [point] x vs y ..."
    for i, line in enumerate(lines):
        if line.startswith("  budget:"):
            lines[i] = f"  upstream rule (llm-compressor): round(quantized / baseline, 2) >= {recovery:.2f}; {why}"
    lines.append("  (this item reproduces llm-compressor's decision; the paired item beside it states its confidence)")
    row = {**paired.row, "verdict": "pass" if ok else "fail", "mode": "parity", "budget": f"recovery >= {recovery:.0%}"}
    return Outcome(ok, "\n".join(lines), row, paired.degradation, verdict)


def flip_counts(reference: TaskResult, candidate: TaskResult, ref_label: str, cand_label: str) -> tuple[int, int, int]:
    """(worse, better, n): items right in the reference and wrong in the candidate, the reverse, and all of them.
    Only 0/1 scores flip: anything else is a ResultError."""
    ref_s, cand_s, _, _ = align(reference, candidate, ref_label, cand_label)
    if any(v not in (0.0, 1.0) for v in (*ref_s, *cand_s)):
        raise ResultError(
            f"{cand_label} vs {ref_label} on task {reference.task!r}: flips count items whose 0/1 score changed, and "
            f"{reference.metric!r} is not scored 0/1 per item"
        )
    worse = sum(1 for r, c in zip(ref_s, cand_s, strict=True) if r > c)
    better = sum(1 for r, c in zip(ref_s, cand_s, strict=True) if c > r)
    return worse, better, len(ref_s)


def flip_line(worse: int, better: int, n: int, confidence: float) -> tuple[str, dict[str, Any]]:
    """The flip line every 0/1 comparison reports, and its row fields."""
    lo, hi = clopper_pearson(worse + better, n, confidence)
    share = (worse + better) / n
    text = (
        f"  flips: {worse + better} of {n} items changed answer ({share:.1%}; {worse} worse, {better} better), "
        f"one-sided {percent(confidence)} bounds [{lo:.1%}, {hi:.1%}] (Clopper-Pearson)"
    )
    return text, {"flips": share, "flips_low": lo, "flips_high": hi}


def judge_flips(
    reference: TaskResult,
    candidate: TaskResult,
    *,
    limit: float,
    mode: Mode,
    confidence: float,
    ref_label: str = "baseline",
    cand_label: str = "quantized",
) -> Outcome:
    """Is the share of items whose answer changed (either way) at most ``limit``? Exact binomial bounds on the
    count of changed items: each item changes or not, independently of the others."""
    worse, better, n = flip_counts(reference, candidate, ref_label, cand_label)
    changed = worse + better
    lo, hi = clopper_pearson(changed, n, confidence)
    share = changed / n
    verdict = bounded_verdict(
        share, lo, hi, limit, at_most=True, mode=mode, confidence=confidence, stat_name="share",
        violated="more answers flip than allowed, with confidence",
        not_shown="the data cannot show the flips are within budget",
        shown=": the flips are within budget with confidence",
    )  # fmt: skip
    ok, why, evidence = verdict.passed, verdict.reason, verdict.evidence
    text, fields = flip_line(worse, better, n, confidence)
    lines = [
        f"{'PASS' if ok else 'FAIL'} [{mode}] {cand_label} vs {ref_label} on {reference.task} "
        f"({reference.metric}, n={n})",
        text,
        f"  budget: flips <= {limit:.1%}; {why}",
        f"  {verdict.evidence_line}",
        "  (flips see what accuracy hides: answers lost and gained cancel in the accuracy, not here)",
    ]
    row = {
        "task": reference.task, "metric": reference.metric, "baseline": reference.value, "value": candidate.value,
        "drop": share, "ci_low": lo, "ci_high": hi, "relative": False, "recovery": math.nan, "higher_is_better": True,
        "n": n, "budget": f"flips <= {limit:.1%}", "mode": mode, "confidence": confidence, "method": "clopper-pearson",
        "verdict": "pass" if ok else "fail", "evidence": evidence, **fields,
    }  # fmt: skip
    return Outcome(ok, "\n".join(lines), row, None, verdict)


def judge_divergence(
    candidate: TaskResult,
    *,
    limit: float,
    upper: bool,
    mode: Mode,
    confidence: float,
    cand_label: str = "quantized",
    seed: int = 0,
) -> Outcome:
    """A divergence task's own per-window values against a limit: the mean KL at most ``limit`` (``upper``),
    or the top-1 agreement at least it. The base model is inside each value (every token is compared with
    its distribution), so this is a paired measurement; the bounds are a bootstrap-t over windows (tokens
    within a window are correlated, windows are the independent units)."""
    validate_result(candidate, cand_label)
    value = candidate.value
    lo, hi, method, trusted = _mean_bounds(candidate.scores, confidence, seed)
    note = "" if trusted else f"{candidate.n} windows are too few to decide: {MIN_ITEMS_NOTE}"
    verdict = bounded_verdict(
        value, lo, hi, limit, at_most=upper, mode=mode, confidence=confidence, trusted=trusted, note=note,
        not_shown="not shown within it", shown=": within budget with confidence",
    )  # fmt: skip
    ok, evidence, why = verdict.passed, verdict.evidence, verdict.reason
    word = "<=" if upper else ">="
    kld = candidate.metric == "kld"
    what = "mean KL(base || quantized) per token" if kld else candidate.metric

    def fmt(v: float) -> str:
        return f"{v:.5f}" if kld else f"{v:.2%}"

    extra = []
    if "ppl_ratio" in candidate.meta:
        extra.append(f"perplexity ratio {candidate.meta['ppl_ratio']:.4f}")
    if "kld_p99_tokens" in candidate.meta:
        extra.append(f"99th percentile of the per-token estimates {candidate.meta['kld_p99_tokens']:.4f}")
    lines = [
        f"{'PASS' if ok else 'FAIL'} [{mode}] {cand_label} on {candidate.task} ({what}, n={candidate.n} windows)",
        f"  value: {fmt(value)}   one-sided {percent(confidence)} bounds [{fmt(lo)}, {fmt(hi)}] "
        f"({method} over windows)",
        f"  budget: {candidate.metric} {word} {fmt(limit)}; {why}",
        f"  {verdict.evidence_line}",
    ]
    if extra:
        lines.append("  (" + "; ".join(extra) + ")")
    row: dict[str, Any] = {
        "task": candidate.task, "metric": candidate.metric, "baseline": 0.0 if upper else 1.0, "value": value,
        "drop": value if upper else 1.0 - value, "ci_low": lo if upper else 1.0 - hi,
        "ci_high": hi if upper else 1.0 - lo, "relative": False, "recovery": math.nan,
        "higher_is_better": not upper, "n": candidate.n, "budget": f"{candidate.metric} {word} {fmt(limit)}",
        "mode": mode, "confidence": confidence, "method": method, "verdict": "pass" if ok else "fail",
        "evidence": evidence, "reference": "base model's distribution",
        **{k: candidate.meta[k] for k in ("ppl_ratio", "kld_p99_tokens") if k in candidate.meta},
    }  # fmt: skip
    return Outcome(ok, "\n".join(lines), row, None, verdict)


def _count(needed: float | None) -> int | None:
    return int(needed) if needed is not None and math.isfinite(needed) else None


def _mean_bounds(scores: tuple[float, ...], confidence: float, seed: int) -> tuple[float, float, str, bool]:
    """One-sided bounds (each at ``confidence``) on the mean of one model's per-item scores, and
    whether they are trusted (Clopper-Pearson for 0/1 scores; a bootstrap-t otherwise)."""
    n = len(scores)
    if all(s in (0.0, 1.0) for s in scores):
        lo, hi = clopper_pearson(int(round(sum(scores))), n, confidence)
        return lo, hi, "clopper-pearson", True
    import numpy as np

    lo, hi = studentized_bounds(np.asarray(scores), confidence, seed=seed)
    return lo, hi, "bootstrap-t", n >= MIN_CONTINUOUS_ITEMS


def judge_floor(
    candidate: TaskResult,
    floor: ValueFloor,
    *,
    mode: Mode,
    confidence: float,
    cand_label: str = "model",
    seed: int = 0,
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
    lo, hi, method, trusted = _mean_bounds(candidate.scores, confidence, seed)
    note = "" if trusted else f"{candidate.n} items are too few to decide: {MIN_ITEMS_NOTE}"
    verdict = bounded_verdict(
        value, lo, hi, limit, at_most=False, mode=mode, confidence=confidence, trusted=trusted, note=note,
        stat_name="value", limit_name="floor", violated="the value is below the floor with confidence",
        not_shown="the data cannot show the value reaches the floor",
    )  # fmt: skip
    return _floor_outcome(candidate, floor, verdict, confidence, lo, hi, method, cand_label)


def _floor_outcome(
    candidate: TaskResult,
    floor: ValueFloor,
    verdict: Verdict,
    confidence: float,
    lo: float,
    hi: float,
    method: str,
    cand_label: str,
) -> Outcome:
    ok, mode, evidence = verdict.passed, verdict.mode, verdict.evidence
    value, ref = candidate.value, floor.reference
    relative = ref != 0

    def loss(v: float) -> float:
        return (ref - v) / abs(ref) if relative else ref - v

    lines = [
        f"{'PASS' if ok else 'FAIL'} [{mode}] {cand_label} on {candidate.task} ({candidate.metric}, n={candidate.n})",
        f"  value: {value:.4f}   one-sided {percent(confidence)} bounds [{lo:.4f}, {hi:.4f}] ({method})",
        f"  budget: {floor}; {verdict.reason}",
        f"  {verdict.evidence_line}",
        "  (the floor derives from one recorded number: judged on this run's own items, not paired)",
    ]
    substituted = candidate.meta.get("split_substituted")
    if substituted:
        lines.append(f"  data: split substituted offline ({'; '.join(substituted)})")
    # "baseline" is the recorded value the floor derives from
    row = {
        "task": candidate.task, "metric": candidate.metric, "baseline": ref,
        "value": value, "drop": loss(value), "ci_low": loss(hi), "ci_high": loss(lo), "relative": relative,
        "recovery": value / ref if relative else math.nan, "higher_is_better": True, "n": candidate.n,
        "budget": str(floor), "mode": mode, "confidence": confidence, "method": method,
        "verdict": "pass" if ok else "fail", "evidence": evidence, "reference": "recorded value",
    }  # fmt: skip
    if substituted:
        row["split_substituted"] = list(substituted)
    return Outcome(ok, "\n".join(lines), row, None, verdict)


def both(first: Outcome, second: Outcome) -> Outcome:
    """Two claims on one item: it passes when both hold; the row is the second's (the paired one)."""
    passed = first.passed and second.passed
    budget = f"{first.row.get('budget')}; paired loss <= {second.row.get('budget')}"
    kinds = {first.row.get("evidence"), second.row.get("evidence")}
    evidence = "violated" if "violated" in kinds else ("within" if kinds == {"within"} else "inconclusive")
    row = {**second.row, "budget": budget, "verdict": "pass" if passed else "fail", "evidence": evidence}
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
    against a factor of the baseline's. A point comparison: measurements have no per-item scores,
    so the evidence is the measurement's own side of the budget.
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
    evidence: Evidence = "within" if ok else "violated"
    row = {
        "kind": "efficiency", "task": None, "metric": measurement, "unit": "bytes" if memory else "tokens/s",
        "baseline": baseline, "value": value, "ratio": ratio, "budget": budget, "mode": "point",
        "method": "measurement", "verdict": "pass" if ok else "fail", "evidence": evidence,
    }  # fmt: skip
    return Outcome(ok, "\n".join(lines), row, None, Verdict(ok, "point", bound, value, why, evidence))


def judge_pooled(
    pairs: list[tuple[TaskResult, TaskResult]],
    *,
    threshold: Threshold | None,
    mode: Mode,
    confidence: float,
    ref_label: str = "baseline",
    cand_label: str = "quantized",
    across_models: bool = False,
) -> Outcome:
    """Is ``candidate`` within ``threshold`` of ``reference`` on the macro average over several tasks?

    Each (reference, candidate) pair is one task, aligned item by item; every task weighs 1/T
    (the Open LLM Leaderboard's average), and the bounds are the pooled score bounds of
    :func:`~pytest_quant.stats.pooled_score_bounds`. Only 0/1 scores pool; a relative budget is
    relative to the macro average of the reference.
    """
    import numpy as np

    from pytest_quant.stats import pooled_score_bounds

    counts = []
    for reference, candidate in pairs:
        ref_s, cand_s, _, _ = align(reference, candidate, ref_label, cand_label, across_models=across_models)
        _validate_unit(reference, candidate, threshold)
        if reference.aggregation != "mean" or any(s not in (0.0, 1.0) for s in (*ref_s, *cand_s)):
            raise ResultError(
                f"task {reference.task!r} ({reference.metric}) does not score items 0/1: a pooled budget averages "
                "proportions over its tasks; judge this task on its own"
            )
        r, c = np.asarray(ref_s), np.asarray(cand_s)
        worse, better = int(np.sum((r == 1) & (c == 0))), int(np.sum((r == 0) & (c == 1)))
        if not reference.higher_is_better:
            worse, better = better, worse
        counts.append((reference.task, worse, better, r.size, float(r.mean()), float(c.mean())))
    weight = 1.0 / len(counts)
    v_r = sum(weight * t[4] for t in counts)
    v_c = sum(weight * t[5] for t in counts)
    relative = threshold is not None and threshold.kind == "relative"
    if relative and v_r == 0:
        raise ResultError(f"budget {threshold} is relative to {ref_label}'s average, which is 0 on these items")
    scale = abs(v_r) if relative else 1.0
    w, b, n = [t[1] for t in counts], [t[2] for t in counts], [t[3] for t in counts]
    lo, hi = (float(v) for v in pooled_score_bounds(w, b, n, [weight] * len(counts), confidence))
    est = sum(weight * (t[1] - t[2]) / t[3] for t in counts)
    spread = math.sqrt(sum(n) * sum(weight**2 * max((t[1] + t[2]) / t[3] - ((t[1] - t[2]) / t[3]) ** 2, 0) / t[3]
                                    for t in counts))  # fmt: skip
    deg = Degradation(est / scale, lo / scale, hi / scale, confidence, sum(n), relative, "pooled-score", v_r, v_c,
                      True, sum(w), sum(b), spread / scale)  # fmt: skip
    verdict = decide(deg, 0.0 if threshold is None else threshold.value, mode)
    if verdict.evidence == "inconclusive":  # items_to_decide scales a single task's counts: scale the pool's instead
        verdict = _pooled_needed(verdict, counts, weight, confidence, scale, deg)
    names = [t[0] for t in counts]
    first = TaskResult(f"pool({'+'.join(names)})", pairs[0][0].metric, v_r, True, "mean", ("pooled",), (v_r,))
    outcome = _paired_outcome(first, pairs[0][1], deg, verdict, threshold, ref_label, cand_label, False)
    per_task = [
        f"    {t[0]}: n={t[3]}, {ref_label} {t[4]:.4f}, {cand_label} {t[5]:.4f}, items worse/better {t[1]}/{t[2]}"
        for t in counts
    ]
    lines = outcome.explanation.split("\n")
    lines[1:1] = [f"  pooled over {len(counts)} tasks, each weighing 1/{len(counts)} (a macro average):", *per_task]
    row = {**outcome.row, "pooled": {t[0]: {"n": t[3], "baseline": t[4], "value": t[5]} for t in counts}}
    row["metric"] = "macro average of " + ", ".join(sorted({p[0].metric for p in pairs}))
    return Outcome(outcome.passed, "\n".join(lines), row, deg, verdict)


def _pooled_needed(
    verdict: Verdict,
    counts: list[tuple[str, int, int, int, float, float]],
    weight: float,
    confidence: float,
    scale: float,
    deg: Degradation,
) -> Verdict:
    """``verdict`` with the items that would decide a pooled budget: every task's counts scaled up alike."""
    from dataclasses import replace

    from pytest_quant.stats import pooled_score_bounds

    target = verdict.limit * scale
    within = deg.estimate < verdict.limit

    def decides(k: float) -> bool:
        w = [max(t[1], 0.5) * k for t in counts]
        b = [max(t[2], 0.5) * k for t in counts]
        lo, hi = pooled_score_bounds(w, b, [t[3] * k for t in counts], [weight] * len(counts), confidence)
        return bool(hi <= target) if within else bool(lo > target)

    if deg.estimate == verdict.limit:
        return replace(verdict, items_needed=math.inf, evidence_note=_needed_text(math.inf, deg))
    k = 1.0
    while not decides(k) and k < 1e6:
        k *= 1.25
    needed = float(math.ceil(deg.n * k)) if k < 1e6 else math.inf
    return replace(verdict, items_needed=needed, evidence_note=_needed_text(needed, deg))
