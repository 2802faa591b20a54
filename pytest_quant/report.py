"""Rows of results → terminal table, machine-readable JSON and Markdown (pure functions).

Two kinds of row: accuracy rows (a paired comparison or a floor on one task; ``kind`` absent or
``"accuracy"``) and efficiency rows (``kind: "efficiency"``: weight memory or a speed of one
scheme against the unquantized model, a ratio of two measurements, no bounds). Accuracy rows of a
scheme also carry ``weight_bytes`` / ``baseline_weight_bytes``, the x axis of the Pareto plot
(:mod:`pytest_quant.plot`). Every row carries its ``evidence`` next to its verdict: ``within``,
``violated`` or ``inconclusive`` (with the items that would decide it), whatever the mode made of it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

REPORT_FIELDS = (
    "suite",
    "model",
    "scheme",
    "task",
    "metric",
    "baseline",
    "value",
    "drop",
    "ci_low",
    "ci_high",
    "relative",
    "recovery",
    "n",
    "budget",
    "mode",
    "confidence",
    "method",
    "verdict",
    "evidence",
    "items_needed",
    "flip_rate",
    "item",
    "kind",
    "unit",
    "ratio",
    "weight_bytes",
    "baseline_weight_bytes",
)
EVIDENCE_NOTE = (
    "Evidence is what the data support, whatever the mode made of it: within (the upper bound is within "
    "budget: shown), violated (the lower bound is beyond it: shown), inconclusive (neither: no violation "
    "shown, within budget not shown; ~N: about N items would decide it if the loss stays at its estimate). "
    "An alarm passes an inconclusive budget; a gate fails it."
)


def _efficiency(row: dict[str, Any]) -> bool:
    return row.get("kind") == "efficiency"


def _measured(row: dict[str, Any], key: str) -> str:
    """An efficiency row's number: bytes in binary units, speeds in tokens/s."""
    from pytest_quant.budget import format_bytes

    v = row.get(key)
    if v is None:
        return "-"
    return format_bytes(v) if row.get("unit") == "bytes" else f"{v:,.1f} tok/s"


def _num(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _loss(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if row.get("relative"):
        return f"{v * 100:+.2f}%"
    if row.get("metric") == "kld":
        return f"{v:+.4f} nats"  # a KL divergence is its own unit, not points of a proportion
    if row.get("points") is False:
        return f"{v:+.4g}"  # a difference of the metric itself (MT-Bench's 1..10 ratings)
    return f"{v * 100:+.2f}pp"


def evidence_text(row: dict[str, Any]) -> str:
    """``within``, ``violated``, ``inconclusive (~N)`` or ``-`` for a row."""
    evidence = row.get("evidence")
    if evidence is None:
        return "-"
    if evidence == "inconclusive" and row.get("items_needed"):
        return f"inconclusive (~{row['items_needed']})"
    return str(evidence)


def table_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """A fixed-width table: scheme x task with baseline, quantized, loss, bounds, budget, evidence, verdict.

    Efficiency rows show the two measurements and their ratio (in the loss column) instead.
    """
    header = (
        "scheme", "task", "metric", "baseline", "quantized", "loss", "bounds", "n", "budget", "mode", "evidence",
        "verdict",
    )  # fmt: skip
    body = []
    for r in rows:
        if _efficiency(r) and r.get("baseline") is not None:
            body.append(
                (
                    str(r.get("scheme")),
                    "-",
                    str(r.get("metric")),
                    _measured(r, "baseline"),
                    _measured(r, "value"),
                    f"{r['ratio']:.3f}x",
                    "-",
                    "-",
                    str(r.get("budget")),
                    "point",
                    evidence_text(r),
                    str(r.get("verdict")),
                )
            )
            continue
        if r.get("baseline") is None:
            # an error row: its keys may be present and None (a compare budget has no single scheme)
            scheme, task, budget, mode, verdict = (
                str(r[k]) if r.get(k) is not None else d
                for k, d in (("scheme", "-"), ("task", "-"), ("budget", "-"), ("mode", "-"), ("verdict", "error"))
            )
            body.append((scheme, task, "-", "-", "-", "-", "-", "-", budget, mode, "-", verdict))
            continue
        body.append(
            (
                str(r.get("scheme")),
                str(r.get("task")),
                str(r.get("metric")),
                _num(r.get("baseline"), ".4f"),
                _num(r.get("value"), ".4f"),
                _loss(r, "drop"),
                f"[{_loss(r, 'ci_low')}, {_loss(r, 'ci_high')}]",
                str(r.get("n")),
                str(r.get("budget")),
                str(r.get("mode")),
                evidence_text(r),
                str(r.get("verdict")),
            )
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*b) for b in body]
    return lines


def to_json(rows: Iterable[dict[str, Any]]) -> str:
    """One object per item with the stable field set of :data:`REPORT_FIELDS` (NaN as null)."""
    out = []
    for r in rows:
        obj = {}
        for k in REPORT_FIELDS:
            v = r.get(k)
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            obj[k] = v
        obj["kind"] = r.get("kind") or "accuracy"
        for extra in (
            "efficiency",
            "sequential",
            "family",
            "nominal_confidence",
            "evidence_alone",
            "backend",
            "backend_fallback",
            "points",
            "checkpoint_loading",
        ):
            if r.get(extra) is not None:
                obj[extra] = r[extra]
        if r.get("error"):
            obj["error"] = r["error"]
        out.append(obj)
    return json.dumps({"format": "pytest-quant/report", "version": 1, "items": out}, indent=1)


def _md_loss(row: dict[str, Any]) -> str:
    if row.get("drop") is None:
        return "-"
    return f"{_loss(row, 'drop')} [{_loss(row, 'ci_low')}, {_loss(row, 'ci_high')}]"


_VERDICT_MD = {"pass": "✅ pass", "fail": "❌ FAIL", "error": "⚠️ error", "xfail": "➖ xfail", "xpass": "❗ xpass"}


def markdown(rows: Iterable[dict[str, Any]], *, title: str = "pytest-quant report") -> str:
    """A Markdown report, one table per model, ready for a PR comment or a model card."""
    rows = list(rows)
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_model.setdefault(str(r.get("model") or "model"), []).append(r)
    counts: dict[str, int] = {}
    for r in rows:
        counts[str(r.get("verdict"))] = counts.get(str(r.get("verdict")), 0) + 1
    out = [f"# {title}", ""]
    out.append(", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "no budget items")
    out.append("")
    for model, items in by_model.items():
        out += [f"## {model}", ""]
        out.append(
            "| scheme | task | metric | baseline | quantized | recovery | loss [one-sided bounds] | n | budget | mode "
            "| evidence | verdict | weights |"
        )
        out.append("|---|---|---|---:|---:|---:|---|---:|---|---|---|---|---:|")
        for r in items:
            rec = r.get("recovery")
            eff = _efficiency(r) and r.get("baseline") is not None
            out.append(
                "| "
                + " | ".join(
                    [
                        str(r.get("scheme", "-")),
                        "-" if eff else str(r.get("task", "-")),
                        str(r.get("metric") or "-"),
                        _measured(r, "baseline") if eff else _num(r.get("baseline"), ".4f"),
                        _measured(r, "value") if eff else _num(r.get("value"), ".4f"),
                        f"{r['ratio']:.3f}x" if eff else ("-" if rec is None else f"{rec * 100:.2f}%"),
                        "-" if eff else _md_loss(r),
                        "-" if eff else str(r.get("n") or "-"),
                        str(r.get("budget", "-")).replace("|", "\\|"),
                        str(r.get("mode") or "-"),
                        evidence_text(r),
                        _VERDICT_MD.get(str(r.get("verdict")), str(r.get("verdict"))),
                        _md_weights(r),
                    ]
                )
                + " |"
            )
        errors = [r for r in items if r.get("error")]
        if errors:
            out += ["", "Errors:", ""]
            out += [f"- `{r.get('item')}`: {str(r['error']).splitlines()[0]}" for r in errors]
        out.append("")
    conf = {float(r["confidence"]) for r in rows if r.get("confidence")}
    if conf:
        out.append(
            f"Loss is the quantized model's drop against the reference on the same items (pp: absolute points; "
            f"%: relative). Bounds are one-sided at {', '.join(f'{c:.0%}' for c in sorted(conf))} confidence. "
            "Recovery is oriented so that below 100% is worse (for perplexity: baseline / quantized); above 100% "
            "is an improvement only where the loss's upper bound is below zero, otherwise noise."
        )
        out += ["", EVIDENCE_NOTE]
    if any(_efficiency(r) for r in rows):
        out += ["", EFFICIENCY_NOTE]
    summary = [*agreement_lines(rows), *release_lines(rows)]
    if summary:
        out += ["", "```", *summary, "```"]
    return "\n".join(out) + "\n"


EFFICIENCY_NOTE = (
    "Efficiency rows are measurements compared as points, not paired statistics; the recovery column shows "
    "scheme / baseline. Weight memory (the weights column too) counts quantized weights at their packed bit width "
    "plus scales and zero points, other tensors as stored. Speeds are measured through the suite's backend: the HF "
    "backend dequantizes weight-only checkpoints at load (on CPU their speed is about the unquantized model's) and "
    "also measures peak memory; the vLLM backend runs the quantized kernels, so a speed budget means most there "
    "(on a GPU), and reports no peak memory (it reserves a fixed share of the device)."
)


def _md_weights(row: dict[str, Any]) -> str:
    w, b = row.get("weight_bytes"), row.get("baseline_weight_bytes")
    if w is None:
        return "-"
    from pytest_quant.budget import format_bytes

    return format_bytes(w) + (f" ({w / b:.2f}x)" if b else "")


# -- one line per suite: the release decision, and whether the fast tiers rank as accuracy does -------------
_VERDICTS = ("pass", "fail", "xfail", "xpass", "error")


def release_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Per suite: the release verdict, how many budgets were decided, and the error rate the decision holds.

    Gates together are an intersection-union test: "every gate within budget" is shown at each gate's own
    confidence, with no correction. Alarms are judged together with Holm's correction (``--quant-family
    suite``, the default), which keeps the chance of any false alarm at the error rate; judged alone
    (``item``) that chance grows with their number, and the line says how far. Sequential tasks add how
    many items their schemes took."""
    by_suite: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_suite.setdefault(str(r.get("suite") or "suite"), []).append(r)
    out = []
    for suite, items in by_suite.items():
        verdicts = [str(r.get("verdict")) for r in items]
        blocking = sum(v in ("fail", "error", "None") for v in verdicts)
        evidence = [str(r.get("evidence")) for r in items if r.get("evidence")]
        decided = sum(e in ("within", "violated") for e in evidence)
        alarms = [r for r in items if r.get("mode") == "alarm"]
        conf = {float(r.get("nominal_confidence") or r["confidence"]) for r in alarms if r.get("confidence")}
        parts = [
            f"release {suite}: {'BLOCKED' if blocking else 'passes'} ({len(items)} budgets: "
            + ", ".join(
                f"{verdicts.count(v)} {v}" for v in ("pass", "fail", "xfail", "xpass", "error") if v in verdicts
            )
            + f"; {decided} decided: {evidence.count('within')} within, {evidence.count('violated')} violated, "
            f"{evidence.count('inconclusive')} inconclusive)"
        ]
        gates = sum(r.get("mode") == "gate" for r in items)
        if gates:
            parts.append(
                f"  {gates} gate(s): a false pass of the release (some budget exceeded) is at most each gate's error "
                "rate: every gate must show its budget (an intersection-union test needs no correction)"
            )
        if alarms and conf:
            alpha = 1 - min(conf)
            holm = [r for r in alarms if (r.get("family") or {}).get("correction") == "holm"]
            if holm:
                parts.append(
                    f"  {len(alarms)} alarm(s) judged together (Holm's step-down correction): if every budget held "
                    f"exactly, the chance of any false alarm among them is at most {alpha:.0%}"
                )
            elif len(alarms) == 1:
                parts.append(f"  1 alarm at {alpha:.0%}: if its budget held exactly, a false alarm has that chance")
            else:
                fwer = 1 - (1 - alpha) ** len(alarms)
                parts.append(
                    f"  {len(alarms)} alarm(s), each at {alpha:.0%} alone (--quant-family item): if every budget held "
                    f"exactly, the chance of at least one false alarm among them is up to {fwer:.0%} (independent "
                    f"items; Bonferroni: at most {min(1.0, alpha * len(alarms)):.0%})"
                )
        parts += _sequential_lines(items)
        parts += _backend_lines(items)
        parts += _checkpoint_lines(items)
        out += parts
    return out


def _backend_lines(items: list[dict[str, Any]]) -> list[str]:
    """Under ``backend: auto``: which budgets ran on which backend, and why vLLM could not run the others."""
    chosen = [r for r in items if r.get("backend")]
    if not chosen:
        return []
    on_vllm = sum(r["backend"] == "vllm" for r in chosen)
    out = [f"  backend auto: {on_vllm} budget(s) on vllm, {len(chosen) - on_vllm} on hf (transformers)"]
    reasons: dict[str, list[str]] = {}
    for r in chosen:
        if r.get("backend_fallback"):
            reasons.setdefault(str(r["backend_fallback"]), []).append(str(r.get("budget_name") or r.get("item")))
    for why, budgets in reasons.items():
        out.append(f"    fell back to hf for {', '.join(budgets)}: {why}")
    return out


def _checkpoint_lines(items: list[dict[str, Any]]) -> list[str]:
    """How each ``checkpoint:`` scheme was loaded (as is, dequantized by pytest-quant, converted from GGUF)."""
    loaded = {str(r.get("scheme")): str(r["checkpoint_loading"]) for r in items if r.get("checkpoint_loading")}
    return [f"  checkpoint {scheme}: loaded {how}" for scheme, how in sorted(loaded.items())]


def _sequential_lines(items: list[dict[str, Any]]) -> list[str]:
    """Per sequential task: how many items its schemes took, against evaluating all of them at ``max``."""
    tasks: dict[str, dict[str, Any]] = {}
    for r in items:
        seq = r.get("sequential")
        if isinstance(seq, dict):
            t = tasks.setdefault(
                str(r.get("task")), {"max": seq["max"], "evaluated": {}, "budgets": 0, "early": 0, "futile": 0}
            )
            t["evaluated"].update(seq.get("evaluated") or {})
            t["budgets"] += 1
            t["early"] += bool(seq.get("decided")) and seq["stage"] < seq["stages"]
            t["futile"] += bool(seq.get("futile"))
    out = []
    for task, t in tasks.items():
        took, full = sum(t["evaluated"].values()), t["max"] * len(t["evaluated"])
        out.append(
            f"  sequential {task}: {t['early']} of {t['budgets']} budget(s) decided before the last stage"
            + (f", {t['futile']} stopped for futility" if t["futile"] else "")
            + "; "
            f"its budgets read {took} of {full} items ({len(t['evaluated'])} scheme(s), up to {t['max']} each)"
        )
    return out


def _spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else math.nan


def tier_values(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per model, per tier, per scheme: accuracy (mean relative loss over its 0/1-scored tasks against the
    baseline), perplexity (relative loss) and KL (the divergence tier's mean KL, from budgets on it or from
    comparisons, whose rows carry both sides)."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        model, scheme, metric = str(r.get("model")), str(r.get("scheme") or ""), str(r.get("metric") or "")
        value, base = r.get("value"), r.get("baseline")
        if not isinstance(value, (int, float)) or not isinstance(base, (int, float)) or r.get("error"):
            continue
        tiers = out.setdefault(model, {})
        if metric == "kld":
            if " vs " in scheme:
                better, worse = scheme.split(" vs ", 1)
                tiers.setdefault("kl", {}).setdefault(better, []).append(float(value))
                tiers.setdefault("kl", {}).setdefault(worse, []).append(float(base))
            else:
                tiers.setdefault("kl", {}).setdefault(scheme, []).append(float(value))
            continue
        if " vs " in scheme or r.get("reference") or not base or metric in ("top1_agreement", "nll") or _efficiency(r):
            continue  # comparisons, floors and other references do not say how a scheme fares against the base
        tier = (
            "perplexity" if metric.split(",")[0] in ("perplexity", "word_perplexity", "bits_per_byte") else "accuracy"
        )
        loss = (float(value) - float(base)) / abs(float(base)) * (1 if tier == "perplexity" else -1)
        tiers.setdefault(tier, {}).setdefault(scheme, []).append(loss)
    return {
        m: {t: {s: sum(v) / len(v) for s, v in schemes.items()} for t, schemes in tiers.items()}
        for m, tiers in out.items()
    }


def agreement_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Per model: does each fast tier rank the schemes as the accuracy tier does (Spearman's rho, with n)?
    The evidence a team needs before trusting a fast tier pre-merge; with few schemes, rho moves a lot."""
    out = []
    for model, tiers in tier_values(rows).items():
        acc = tiers.get("accuracy", {})
        parts = []
        for tier in ("perplexity", "kl"):
            fast = tiers.get(tier, {})
            common = sorted(set(acc) & set(fast))
            if len(common) >= 3:
                rho = _spearman([acc[s] for s in common], [fast[s] for s in common])
                parts.append(f"{'KL' if tier == 'kl' else tier} rho = {rho:+.2f} (n={len(common)} schemes)")
        if parts:
            out.append(f"fast tiers against accuracy on {model}: " + "; ".join(parts) + " (Spearman, rank by loss)")
    return out
