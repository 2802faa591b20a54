"""Rows of results → terminal table, machine-readable JSON, Markdown and a Pareto plot (pure functions).

Two kinds of row: accuracy rows (a paired comparison or a floor on one task; ``kind`` absent or
``"accuracy"``) and efficiency rows (``kind: "efficiency"``: weight memory or a speed of one
scheme against the unquantized model, a ratio of two measurements, no bounds). Accuracy rows of a
scheme also carry ``weight_bytes`` / ``baseline_weight_bytes``, the x axis of the Pareto plot.
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
    "item",
    "kind",
    "unit",
    "ratio",
    "weight_bytes",
    "baseline_weight_bytes",
)
PERPLEXITY_METRICS = ("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte")
MIB = 2**20


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
    return f"{v * 100:+.2f}pp"


def table_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """A fixed-width table: scheme x task with baseline, quantized, loss, bounds, budget, verdict.

    Efficiency rows show the two measurements and their ratio (in the loss column) instead.
    """
    header = ("scheme", "task", "metric", "baseline", "quantized", "loss", "bounds", "n", "budget", "mode", "verdict")
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
            body.append((scheme, task, "-", "-", "-", "-", "-", "-", budget, mode, verdict))
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
            "| verdict | weights |"
        )
        out.append("|---|---|---|---:|---:|---:|---|---:|---|---|---|---:|")
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
            "Recovery above 100% is noise, not an improvement."
        )
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


# -- Pareto plot -------------------------------------------------------------------------------
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


def pareto_points(rows: Iterable[dict[str, Any]]) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """Per model and (task, metric): whether higher is better, the baseline's (MiB, value) point
    or None, and each scheme's (MiB, value) point.

    From accuracy rows that carry a weight memory; compare rows (``a vs b``) and rows whose
    reference is a recorded number (floors) give no baseline point. The first row of each
    scheme and task wins (several budgets judge the same evaluation).
    """
    out: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for r in rows:
        if _efficiency(r) or r.get("weight_bytes") is None or r.get("value") is None or r.get("task") is None:
            continue
        if not isinstance(r["value"], (int, float)) or not math.isfinite(r["value"]):
            continue
        metric = str(r.get("metric"))
        panel = out.setdefault(str(r.get("model") or "model"), {}).setdefault(
            (str(r["task"]), metric),
            {"higher_is_better": metric.split(",")[0] not in PERPLEXITY_METRICS, "baseline": None, "schemes": {}},
        )
        scheme, mem = str(r.get("scheme")), r["weight_bytes"] / MIB
        if (
            r.get("baseline_weight_bytes") is not None
            and mem == r["baseline_weight_bytes"] / MIB
            and r.get("reference") == "recorded value"
        ):
            panel["baseline"] = panel["baseline"] or (mem, float(r["value"]))  # a floor on the model as is
            continue
        panel["schemes"].setdefault(scheme, (mem, float(r["value"])))
        base = r.get("baseline")
        if (
            panel["baseline"] is None
            and r.get("reference") != "recorded value"
            and isinstance(base, (int, float))
            and math.isfinite(base)
            and r.get("baseline_weight_bytes") is not None
        ):
            panel["baseline"] = (r["baseline_weight_bytes"] / MIB, float(base))
    return out


def pareto_front(points: list[tuple[float, float]], *, higher_is_better: bool = True) -> list[tuple[float, float]]:
    """The points no other point beats on both less memory and a better value, by increasing memory."""
    sign = 1.0 if higher_is_better else -1.0
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if not front or sign * y > sign * front[-1][1]:
            front.append((x, y))
    return front


def pareto_png(rows: Iterable[dict[str, Any]], *, dpi: int = 110) -> bytes | None:
    """A PNG: per model a row of panels, one per task, of the metric against weight memory (MiB).

    One marker and colour per scheme (the same in every panel), the unquantized model as a black
    star, the Pareto front as a dashed step line; schemes off the front are drawn faded. None when
    no row has both a value and a weight memory. Imports matplotlib (object API, Agg canvas: no
    global backend is switched); raises ImportError when it is not installed.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = pareto_points(rows)
    panels = [(model, key, panel) for model, tasks in data.items() for key, panel in tasks.items() if panel["schemes"]]
    if not panels:
        return None
    schemes = list(dict.fromkeys(s for _, _, p in panels for s in p["schemes"]))
    colors = [f"C{i % 10}" for i in range(len(schemes))]
    style = {s: (colors[i], _MARKERS[i % len(_MARKERS)]) for i, s in enumerate(schemes)}
    cols = min(3, max(sum(1 for m, _, _ in panels if m == model) for model in data))
    grid: list[list[tuple[str, tuple[str, str], dict[str, Any]]]] = []
    for model in data:
        mine = [p for p in panels if p[0] == model]
        grid += [mine[i : i + cols] for i in range(0, len(mine), cols)]
    fig = Figure(figsize=(5.4 * cols, 4.3 * len(grid) + 0.4), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(grid), cols, squeeze=False)
    labels: list[tuple[Any, list[tuple[str, tuple[float, float], str]]]] = []
    for r, line in enumerate(grid):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(line):
                ax.set_visible(False)
                continue
            model, (task, metric), panel = line[c]
            labels.append((ax, _pareto_panel(ax, model, task, metric, panel, style)))
    fig.suptitle(
        "Task metric vs weight memory (packed weights + scales/zero points)\n"
        "★ unquantized · dashed: Pareto front · faded: dominated by another point",
        fontsize=10,
    )
    # Fix the layout first: labels are placed in pixels, which must not move afterwards.
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
    fig.set_layout_engine("none")
    for ax, todo in labels:
        _place_labels(ax, todo)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# Offsets (points) tried in turn for a label: right, left, above, below, then further out.
_LABEL_OFFSETS = (
    (9, 0),
    (-9, 0),
    (0, 11),
    (0, -11),
    (9, 13),
    (9, -13),
    (-9, 13),
    (-9, -13),
    (9, 26),
    (9, -26),
    (-9, 26),
    (-9, -26),
)


def _place_labels(ax: Any, labels: list[tuple[str, tuple[float, float], str]]) -> None:
    """Put each label beside its point where it overlaps no marker, earlier label or the panel's edge."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pts_to_px = fig.dpi / 72.0
    markers = []
    for _, (x, y), _ in labels:
        px, py = ax.transData.transform((x, y))
        r = 7 * pts_to_px
        markers.append((px - r, py - r, px + r, py + r))
    taken: list[tuple[float, float, float, float]] = []

    def clash(box: tuple[float, float, float, float]) -> float:
        x0, y0, x1, y1 = box
        outside = x0 < frame.x0 or x1 > frame.x1 or y0 < frame.y0 or y1 > frame.y1
        hits = sum(1 for a in taken + markers if x0 < a[2] and a[0] < x1 and y0 < a[3] and a[1] < y1)
        return hits + (10 if outside else 0)

    for name, (x, y), color in labels:
        best = None
        for dx, dy in _LABEL_OFFSETS:
            ha = "left" if dx > 0 else ("right" if dx < 0 else "center")
            va = "center" if dy == 0 else ("bottom" if dy > 0 else "top")
            text = ax.annotate(
                name,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=9,
                color=color,
                zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
            )
            bb = text.get_window_extent(renderer)
            box = (bb.x0, bb.y0, bb.x1, bb.y1)
            score = clash(box)
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, text, box)
            else:
                text.remove()
            if score == 0:
                break
        assert best is not None
        taken.append(best[2])


def _pareto_panel(
    ax: Any, model: str, task: str, metric: str, panel: dict[str, Any], style: dict[str, tuple[str, str]]
) -> list[tuple[str, tuple[float, float], str]]:
    """Draw one panel; return its labels (name, point, colour), placed once the layout is fixed."""
    hib = panel["higher_is_better"]
    points = dict(panel["schemes"])
    base = panel["baseline"]
    unit = "GiB" if max(p[0] for p in [*points.values(), *([base] if base else [])]) >= 2048 else "MiB"
    if unit == "GiB":  # the points are in MiB
        points = {k: (x / 1024, y) for k, (x, y) in points.items()}
        base = (base[0] / 1024, base[1]) if base else None
    everything = list(points.values()) + ([base] if base else [])
    front = pareto_front(everything, higher_is_better=hib)
    on_front = set(front)
    if len(front) > 1:
        xs = [p[0] for p in front]
        ys = [p[1] for p in front]
        ax.step(xs, ys, where="post", color="0.45", linestyle="--", linewidth=1.2, zorder=1)
    ys_all = [p[1] for p in everything]
    span = (max(ys_all) - min(ys_all)) or max(abs(ys_all[0]) * 0.05, 1e-3)
    for name, (x, y) in sorted(points.items(), key=lambda kv: kv[1]):
        color, marker = style[name]
        faded = (x, y) not in on_front
        ax.scatter(
            [x],
            [y],
            s=70,
            color=color,
            marker=marker,
            alpha=0.45 if faded else 1.0,
            edgecolors="black",
            linewidths=0.6,
            zorder=3,
        )
    if base:
        ax.scatter([base[0]], [base[1]], s=190, color="black", marker="*", zorder=4)
    xmax = max(p[0] for p in everything)
    ax.set_xlim(0, xmax * 1.12)
    lo, hi = min(ys_all), max(ys_all)
    ax.set_ylim(lo - 0.25 * span, hi + 0.25 * span)
    labelled = sorted(points.items(), key=lambda kv: (kv[1][0], kv[1][1]))
    if base:
        labelled.insert(0, ("baseline (unquantized)", base))
    labels = [(name, xy, "black" if name.startswith("baseline") else style[name][0]) for name, xy in labelled]
    ax.set_xlabel(f"weight memory ({unit})")
    ax.set_ylabel(f"{metric} ({'higher' if hib else 'lower'} is better)")
    ax.set_title(f"{model} · {task}", fontsize=11)
    ax.grid(True, alpha=0.3)
    return labels
