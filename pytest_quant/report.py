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
        if r.get("efficiency"):
            obj["efficiency"] = r["efficiency"]
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
