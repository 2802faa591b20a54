"""Before any compute: can each budget be decided with the items its task has?

Logic layer, read at collection time from the suite, the stored baseline (its value and item
count), the flip rates measured by earlier runs (``planning.json`` in the cache, written by the
reporter) and the statistics' sample-size arithmetic. Two findings, each a warning at the
budget's line:

- **too few items**: at the task's ``limit`` the budget cannot be decided with the stated power;
- **undecidable**: not even the task's full size decides it, whatever the limit; the options
  are named (alarm mode, a wider budget, pooling tasks, a larger benchmark).

For 0/1 scores the arithmetic is :func:`~pytest_quant.stats.required_items` at the measured flip
rate (else ``quant_assumed_flip_rate``) with 80% power; for perplexity-type and other continuous
metrics, the minimum number of items below which no bound is trusted, and the measured spread
when an earlier run left one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

from pytest_quant.baseline import BaselineStore
from pytest_quant.budget import Mode, Threshold
from pytest_quant.config import SuiteConfig, TaskConfig
from pytest_quant.errors import BaselineError
from pytest_quant.stats import MIN_CONTINUOUS_ITEMS, required_items
from pytest_quant.suite import Check

POWER = 0.80
PLANNING_FILE = "planning.json"
# lm-eval groups whose ``limit`` applies to each subtask (lm-eval 0.4.13's task folders).
GROUP_SUBTASKS: dict[str, int] = {
    "mmlu": 57,
    "mmlu_pro": 14,
    "leaderboard_bbh": 24,
    "leaderboard_gpqa": 3,
    "leaderboard_math_hard": 7,
    "leaderboard_musr": 3,
}
# Items in the split lm-eval evaluates, for tasks whose size a suite may not state (lm-eval 0.4.13).
KNOWN_TASK_SIZES: dict[str, int] = {
    "arc_challenge": 1172,
    "arc_easy": 2376,
    "hellaswag": 10042,
    "piqa": 1838,
    "winogrande": 1267,
    "lambada_openai": 5153,
    "boolq": 3270,
    "openbookqa": 500,
    "gsm8k": 1319,
    "mmlu": 14042,
    "truthfulqa_mc2": 817,
    "truthfulqa_mc1": 817,
    "ifeval": 541,
    "sciq": 1000,
    "social_iqa": 1954,
    "commonsense_qa": 1221,
    "mmlu_pro": 12032,
    "leaderboard_mmlu_pro": 12032,
    "leaderboard_ifeval": 541,
    "leaderboard_bbh": 5761,
    "leaderboard_gpqa": 1192,
    "leaderboard_math_hard": 1324,
    "leaderboard_musr": 756,
}
# Tasks whose per-item score is not 0/1 (planning cannot tell before a baseline is stored).
CONTINUOUS_TASKS = frozenset({"truthfulqa_mc2"})
LARGER = "a larger benchmark (full MMLU has 14,042 items)"


@dataclass(frozen=True)
class Finding:
    """Something to warn about before the run, at ``line`` of the suite file."""

    message: str
    line: int


@dataclass(frozen=True)
class _Task:
    """What planning knows of one task: items evaluated, full size, the baseline's value and kind."""

    name: str
    items: int | None
    full: int | None
    base_value: float
    continuous: bool
    measured_flips: float | None
    measured_spread: float | None


def read_measurements(cache_dir: Path) -> dict[str, dict[str, Any]]:
    """What earlier runs measured (flip rate, spread, items) per ``model|scheme|task``; {} when nothing."""
    try:
        data = json.loads((Path(cache_dir) / PLANNING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measurement_key(model: str, scheme: str, task: str) -> str:
    return f"{model}|{scheme}|{task}"


def _task(suite: SuiteConfig, name: str, scheme: str, store: BaselineStore, measured: dict[str, Any]) -> _Task:
    task: TaskConfig = suite.tasks[name]
    full = KNOWN_TASK_SIZES.get(task.lm_eval_task)
    base_value, stored_n = task.expected_value or 0.5, None
    continuous = task.perplexity_metric or task.kind == "mt_bench" or task.lm_eval_task in CONTINUOUS_TASKS
    for slot in (name, f"{name}@vllm", f"{name}@hf"):  # backend auto stores a baseline per backend
        try:
            result = store.load(suite.model.name, slot).result
        except BaselineError:
            continue
        base_value, stored_n = result.value, result.n
        continuous = continuous or result.aggregation != "mean" or any(s not in (0.0, 1.0) for s in result.scores)
        break
    planned = task.planned_items
    if planned is not None and task.limit is not None and task.lm_eval_task in GROUP_SUBTASKS:
        planned *= GROUP_SUBTASKS[task.lm_eval_task]  # lm-eval applies a group's limit to each subtask
    if planned is None and stored_n is not None:
        full = stored_n  # recorded on the whole task
    items = min(v for v in (planned, full, stored_n) if v is not None) if (planned or full or stored_n) else None
    m = measured.get(measurement_key(suite.model.name, scheme, name)) or {}
    return _Task(name, items, full, base_value, continuous, m.get("flip_rate"), m.get("spread"))


def findings(
    suite: SuiteConfig,
    checks: list[Check],
    *,
    store: BaselineStore,
    mode_of: Callable[..., Mode],
    confidence_of: Callable[..., float],
    flip_rate: float,
    measured: dict[str, Any] | None = None,
) -> list[Finding]:
    """Every budget whose items cannot decide it (one finding per budget, task and scheme)."""
    out: list[Finding] = []
    seen: set[tuple[int, tuple[str, ...], str]] = set()
    for check in checks:
        budget = check.budget
        tasks = check.pool or ((check.task,) if check.task else ())
        if budget.efficiency is not None or budget.min_value is not None or not tasks:
            continue
        mode = mode_of(budget.mode, suite.mode)
        scheme = check.scheme or (budget.compare.better if budget.compare else "")
        key = (check.budget_index, tasks, scheme)
        if mode == "point" or key in seen:
            continue
        seen.add(key)
        th = budget.threshold if budget.compare is None else budget.compare.margin
        if budget.compare is not None and th is None:
            continue  # a superiority claim ("A >= B"): decided by the size of the gap, which no item count sets
        confidence = confidence_of(budget.confidence, suite.confidence)
        infos = [_task(suite, t, scheme, store, measured or {}) for t in tasks]
        assumed = budget.assumed_flip_rate or suite.assumed_flip_rate or flip_rate
        message = _finding(infos, th, mode, confidence, assumed, pooled=bool(check.pool))
        if message:
            out.append(Finding(f"budget {check.name}: {message}", check.line or 0))
    return out


def _finding(
    infos: list[_Task], th: Threshold | None, mode: Mode, confidence: float, assumed: float, *, pooled: bool
) -> str | None:
    if any(t.continuous for t in infos):
        few = [t for t in infos if t.items is not None and t.items < MIN_CONTINUOUS_ITEMS]
        if few:
            t = few[0]
            return (
                f"task {t.name!r} has {t.items} items: on fewer than {MIN_CONTINUOUS_ITEMS} items a continuous metric "
                f"decides nothing (a gate cannot pass, an alarm cannot fire); raise its limit"
            )
        return _continuous_need(infos[0], th, confidence) if not pooled else None
    if th is None and mode == "alarm":
        return None  # an alarm on a "no worse" claim fires on any clear loss
    flips = [t.measured_flips if t.measured_flips is not None else assumed for t in infos]
    source = (
        "measured"
        if all(t.measured_flips is not None for t in infos)
        else f"assumed {assumed:.1%}: assumed_flip_rate or ini quant_assumed_flip_rate"
    )
    base = sum(t.base_value for t in infos) / len(infos)
    limit = 0.0 if th is None else th.absolute(base)
    flip = sum(flips) / len(flips)
    need = required_items(limit, confidence, flip, POWER)
    items, full = _effective([t.items for t in infos]), _effective([t.full for t in infos])
    what = (
        "a 'no worse' claim without a margin (it needs proof of superiority; add a margin such as '- 1pp')"
        if th is None
        else f"a loss of {th} (~{limit:.4f} absolute at a baseline of {base:.3f})"
    )
    pool = f" (pooled over {len(infos)} tasks: the effective size of their macro average)" if pooled else ""
    at = f"at {flip:.1%} of answers flipping ({source}), {confidence:.0%} confidence and {POWER:.0%} power"
    need_txt = "no finite number of items" if need == math.inf else f"about {int(need):,} items"
    if full is not None and need > full:
        options = ["alarm mode (fails only on a violation shown)", "a wider budget"]
        options += [] if pooled else ["pooling it with other tasks (pool: true)"]
        return (
            f"cannot be decided even at the task's full size: {what} needs {need_txt} {at}, and "
            f"{'the pool' if pooled else 'the task'} has {full:,}{pool}. Options: {', '.join(options)}, or {LARGER}"
        )
    if items is not None and items < need:
        verdict = (
            "gate items will fail for lack of evidence"
            if mode == "gate"
            else "alarm items will only catch larger losses"
        )
        return f"{items:,} items{pool} are too few to resolve {what}: {need_txt} needed {at}; {verdict}"
    return None


def _effective(sizes: list[int | None]) -> int | None:
    """Items of one task, or the effective size of a macro average of several (``T^2 / sum 1/n_t``)."""
    if any(s is None or s <= 0 for s in sizes):
        return None
    known = [s for s in sizes if s is not None]
    return int(len(known) ** 2 / sum(1 / s for s in known))


def _continuous_need(task: _Task, th: Threshold | None, confidence: float) -> str | None:
    """With a spread measured by an earlier run: items a relative budget on a continuous metric needs."""
    if th is None or task.measured_spread is None or task.items is None or th.value <= 0:
        return None
    z = NormalDist().inv_cdf(confidence) + NormalDist().inv_cdf(POWER)
    need = math.ceil((z * task.measured_spread / th.value) ** 2)
    if need <= task.items:
        return None
    return (
        f"task {task.name!r} has {task.items} items, too few to resolve a loss of {th}: about {need:,} needed "
        f"at the per-item spread an earlier run measured ({task.measured_spread:.3g}) and {POWER:.0%} power"
    )
