"""The Pareto plot: each task's metric against weight memory, per scheme, with its bounds (pure).

Plotting layer of the reports (matplotlib's object API on an Agg canvas; no global backend is
switched). A scheme's point carries the range of values its paired loss bounds allow against the
baseline (error bars): a point without bars was judged only in a comparison with another scheme.
The front is the staircase of non-dominated points: less weight memory or a better value, where
memories within 1% count as equal (an asymmetric scheme's zero points do not make a worse point
"non-dominated").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from pytest_quant.config import PERPLEXITY_METRICS

MIB = 2**20
MEMORY_TOLERANCE = 0.01
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
Point = tuple[float, float]


def value_bounds(row: dict[str, Any]) -> tuple[float, float] | None:
    """The candidate values a row's paired loss bounds allow, given the baseline's value (None without bounds)."""
    b, lo, hi = row.get("baseline"), row.get("ci_low"), row.get("ci_high")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (b, lo, hi)):
        return None
    assert isinstance(b, (int, float)) and isinstance(lo, (int, float)) and isinstance(hi, (int, float))
    if str(row.get("metric", "")).split(",")[0] in PERPLEXITY_METRICS:
        ends = (b * (1 + lo), b * (1 + hi))  # loss = value / baseline - 1
    else:
        unit = abs(b) if row.get("relative") else 1.0
        sign = (
            -1.0 if row.get("higher_is_better", True) else 1.0
        )  # loss = (baseline - value) / unit when higher is better
        ends = (b + sign * lo * unit, b + sign * hi * unit)
    return min(ends), max(ends)


def _panel(out: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    metric = str(row.get("metric"))
    return out.setdefault(str(row.get("model") or "model"), {}).setdefault(
        (str(row["task"]), metric),
        {"higher_is_better": metric.split(",")[0] not in (*PERPLEXITY_METRICS, "kld"), "baseline": None, "schemes": {}},
    )


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def pareto_points(rows: Iterable[dict[str, Any]]) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """Per model and (task, metric): whether higher is better, the baseline's (MiB, value) point or
    None, and each scheme's point ``{"xy": (MiB, value), "bounds": (low, high) | None}``.

    From accuracy rows with a weight memory: a scheme against the baseline gives the scheme's point
    with bounds (the first such row wins: several budgets judge one evaluation); a comparison of two
    schemes gives both schemes' points without bounds where no baseline row gave them; a floor on the
    model as is gives the baseline point.
    """
    out: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for r in rows:
        if r.get("kind") == "efficiency" or r.get("task") is None or not _finite(r.get("value")):
            continue
        sides = r.get("compared_weights")
        if isinstance(sides, dict):  # a comparison: {scheme: [MiB value, weight bytes]} for the sides that are schemes
            panel = _panel(out, r)
            for name, (value, weight) in sides.items():
                if _finite(value) and _finite(weight):
                    panel["schemes"].setdefault(name, {"xy": (weight / MIB, float(value)), "bounds": None})
            continue
        if r.get("weight_bytes") is None:
            continue
        panel = _panel(out, r)
        mem = r["weight_bytes"] / MIB
        if r.get("reference") == "recorded value":
            if r.get("baseline_weight_bytes") is not None and mem == r["baseline_weight_bytes"] / MIB:
                panel["baseline"] = panel["baseline"] or (mem, float(r["value"]))  # a floor on the model as is
            continue
        point = {"xy": (mem, float(r["value"])), "bounds": value_bounds(r)}
        current = panel["schemes"].get(str(r.get("scheme")))
        if current is None or current["bounds"] is None:
            panel["schemes"][str(r.get("scheme"))] = point
        base = r.get("baseline")
        if panel["baseline"] is None and isinstance(base, (int, float)) and _finite(base):
            if r.get("baseline_weight_bytes") is not None:
                panel["baseline"] = (r["baseline_weight_bytes"] / MIB, float(base))
    return out


def pareto_front(
    points: list[Point], *, higher_is_better: bool = True, memory_tolerance: float = MEMORY_TOLERANCE
) -> list[Point]:
    """The non-dominated points, by increasing memory: no other point has (within ``memory_tolerance``,
    relative) no more memory and a better value, or less memory and an equal or better value."""
    sign = 1.0 if higher_is_better else -1.0

    def dominated(p: Point) -> bool:
        for q in points:
            if q == p:
                continue
            no_more = q[0] <= p[0] * (1 + memory_tolerance)
            if no_more and (sign * q[1] > sign * p[1] or (sign * q[1] == sign * p[1] and q[0] < p[0])):
                return True
        return False

    return sorted({p for p in points if not dominated(p)})


def pareto_png(rows: Iterable[dict[str, Any]], *, dpi: int = 110) -> bytes | None:
    """A PNG: per model a row of panels, one per task, of the metric against weight memory (MiB).

    One marker and colour per scheme (the same in every panel), the unquantized model as a black
    star, each scheme's paired bounds as an error bar, the Pareto front as a dashed step line;
    schemes off the front are drawn faded. None when no row has both a value and a weight memory.
    Imports matplotlib; raises ImportError when it is not installed.
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
        "★ unquantized · bars: one-sided bounds of the paired loss (no bar: judged only in a comparison) · "
        "dashed: Pareto front · faded: dominated",
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
) -> list[tuple[str, Point, str]]:
    """Draw one panel; return its labels (name, point, colour), placed once the layout is fixed."""
    hib = panel["higher_is_better"]
    points: dict[str, dict[str, Any]] = dict(panel["schemes"])
    base = panel["baseline"]
    scale = 1024.0 if max(p["xy"][0] for p in points.values()) >= 2048 or (base and base[0] >= 2048) else 1.0
    unit = "GiB" if scale > 1 else "MiB"
    xy = {k: (p["xy"][0] / scale, p["xy"][1]) for k, p in points.items()}
    base = (base[0] / scale, base[1]) if base else None
    everything = list(xy.values()) + ([base] if base else [])
    front = pareto_front(everything, higher_is_better=hib)
    if len(front) > 1:  # the best value reachable within each memory: a step after each front point
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.45", linestyle="--",
                linewidth=1.2, zorder=1)  # fmt: skip
    ys_all = [p[1] for p in everything] + [v for p in points.values() if p["bounds"] for v in p["bounds"]]
    for name, (x, y) in sorted(xy.items(), key=lambda kv: kv[1]):
        color, marker = style[name]
        alpha = 1.0 if (x, y) in front else 0.45
        bounds = points[name]["bounds"]
        if bounds is not None:
            ax.errorbar([x], [y], yerr=[[y - bounds[0]], [bounds[1] - y]], fmt="none", ecolor=color, alpha=alpha,
                        elinewidth=1.2, capsize=3, zorder=2)  # fmt: skip
        ax.scatter([x], [y], s=70, color=color, marker=marker, alpha=alpha, edgecolors="black", linewidths=0.6,
                   zorder=3)  # fmt: skip
    if base:
        ax.scatter([base[0]], [base[1]], s=190, color="black", marker="*", zorder=4)
    span = (max(ys_all) - min(ys_all)) or max(abs(ys_all[0]) * 0.05, 1e-3)
    ax.set_xlim(0, max(p[0] for p in everything) * 1.12)
    ax.set_ylim(min(ys_all) - 0.15 * span, max(ys_all) + 0.15 * span)
    if metric == "kld" and max(ys_all) > 0:  # KL spans decades (0.004 for 8-bit, 10 for 2-bit): a log axis past 1e-3
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(0, max(ys_all) * 3)
    labelled: list[tuple[str, Point]] = sorted(xy.items(), key=lambda kv: (kv[1][0], kv[1][1]))
    if base:
        labelled.insert(0, ("baseline (unquantized)", base))
    ax.set_xlabel(f"weight memory ({unit})")
    ax.set_ylabel(f"{metric} ({'higher' if hib else 'lower'} is better)")
    ax.set_title(f"{model} · {task}", fontsize=11)
    ax.grid(True, alpha=0.3)
    return [(name, p, "black" if name.startswith("baseline") else style[name][0]) for name, p in labelled]
