"""YAML suite files → validated :class:`SuiteConfig` and the list of checks they ask for.

Logic layer. Errors name the file, the line and the field path
(``budgets[1].max_drop``) with the offending value, so a release engineer can
fix a suite without reading a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pytest_quant.config import BASELINE, BudgetConfig, FieldProblem, SuiteConfig
from pytest_quant.errors import QuantConfigError


class LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and sequence entry."""


def compose_lines(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise QuantConfigError(
                    f"duplicate key {key!r}", field=dotted(path + (key,)), line=key_node.start_mark.line + 1
                )
            seen.add(key)
            lines[path + (key,)] = key_node.start_mark.line + 1
            compose_lines(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            lines[path + (i,)] = child.start_mark.line + 1
            compose_lines(child, path + (i,), lines)


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<document>"


def line_for(lines: dict[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def load_suite_text(text: str, source: str) -> tuple[SuiteConfig, dict[tuple[Any, ...], int]]:
    """Parse and validate a suite; ``source`` names the file in errors."""
    try:
        node = yaml.compose(text, Loader=LineLoader)
        data = yaml.load(text, Loader=LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        raise QuantConfigError(f"not valid YAML: {problem}", source=source, line=line) from None
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        try:
            compose_lines(node, (), lines)
        except QuantConfigError as exc:
            raise QuantConfigError(exc.detail, source=source, field=exc.field, line=exc.line) from None
    if not isinstance(data, dict):
        raise QuantConfigError(
            f"a suite is a mapping with 'model', 'schemes', 'tasks' and 'budgets', got {type(data).__name__}",
            source=source,
        )
    try:
        suite = SuiteConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, data, lines, source) from None
    return suite, lines


def load_suite(path: Path) -> tuple[SuiteConfig, dict[tuple[Any, ...], int]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantConfigError(f"cannot read suite: {exc}", source=str(path)) from None
    return load_suite_text(text, str(path))


def _config_error(exc: ValidationError, data: Any, lines: dict, source: str) -> QuantConfigError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(err.get("loc", ()))
    # Drop pydantic's validator tags (e.g. 'function-after[...]') and keep the data path.
    path = tuple(p for p in loc if not (isinstance(p, str) and "[" in p and p.startswith("function")))
    problem = (err.get("ctx") or {}).get("error")
    if isinstance(problem, FieldProblem):
        path = path + problem.path
    line = line_for(lines, path)
    msg = err.get("msg", "invalid value")
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown key {path[-1]!r}" if path else "unknown key"
    value = err.get("input")
    show_value = (
        err["type"] != "missing" and not isinstance(value, (dict, list)) and not isinstance(problem, FieldProblem)
    )
    text = msg
    if show_value:
        text += f" (got {value!r})"
    count = exc.error_count()
    if count > 1:
        text += f"  [+{count - 1} more problem{'s' if count > 2 else ''}]"
    return QuantConfigError(text, source=source, field=dotted(path), line=line)


@dataclass(frozen=True)
class Check:
    """One test item: a budget applied to one scheme (or comparison) on one task.

    Efficiency budgets (``max_memory``, ``min_*_speedup``) measure the model, not a task:
    their checks have ``task`` None and one item per scheme.
    """

    budget_index: int
    budget: BudgetConfig
    task: str | None
    scheme: str | None  # None for compare budgets; 'baseline' for a min_value floor on the model as is
    name: str
    line: int | None
    pool: tuple[str, ...] = ()  # a pooled budget's tasks (then ``task`` is None): one check over all of them


def expand_checks(suite: SuiteConfig, lines: dict[tuple[Any, ...], int] | None = None) -> list[Check]:
    """Every (budget, scheme, task) the suite asks for, with stable, readable names
    (``drop<=1%[w8-arc]``, ``fp8>=w8a8[arc]``; efficiency budgets: ``memory<=0.35x[w4]``)."""
    lines = lines or {}
    checks: list[Check] = []
    seen: dict[str, int] = {}
    for i, budget in enumerate(suite.budgets):
        label = budget.label(i)
        tasks = budget.tasks if budget.tasks is not None else tuple(suite.tasks)
        line = line_for(lines, ("budgets", i))
        pairs: list[tuple[str | None, str | None]]
        if budget.pool:
            pool = tuple(tasks)
            for scheme in (None,) if budget.compare is not None else (budget.schemes or tuple(suite.schemes)):
                name = f"{label}[{scheme}-pooled]" if scheme else f"{label}[pooled]"
                checks.append(Check(i, budget, None, scheme, name, line, pool))
            continue
        if budget.compare is not None:
            pairs = [(None, t) for t in tasks]
        elif budget.efficiency is not None:
            schemes = budget.schemes if budget.schemes is not None else tuple(suite.schemes)
            pairs = [(s, None) for s in schemes]
        else:
            schemes = budget.schemes if budget.schemes is not None else tuple(s for s in suite.schemes)
            # 'baseline' is the model as is: only a floor on its own value is a claim about it
            pairs = [(s, t) for s in schemes for t in tasks if s != BASELINE or budget.min_value is not None]
        for scheme, task in pairs:
            if task is None:
                name = f"{label}[{scheme}]"
            else:
                name = f"{label}[{scheme}-{task}]" if scheme and scheme != BASELINE else f"{label}[{task}]"
            if name in seen:
                seen[name] += 1
                name = f"{name}#{seen[name]}"
            else:
                seen[name] = 1
            checks.append(Check(i, budget, task, scheme, name, line))
    return checks


def _looks_like_path(text: str, base: Path) -> bool:
    return text.endswith(".gguf") or text.startswith((".", "/", "~")) or (base / text).exists()


def resolve_paths(suite: SuiteConfig, base: Path) -> SuiteConfig:
    """Make the suite's file paths absolute, relative to the suite file's folder ``base``."""

    def fix(p: str | None) -> str | None:
        if p is None:
            return None
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    def fix_model(model):
        if model.path is not None:
            return model.model_copy(update={"path": fix(model.path)})
        if _looks_like_path(model.name, base):
            return model.model_copy(update={"path": fix(model.name)})
        return model

    model = fix_model(suite.model)
    references = {name: fix_model(ref) for name, ref in suite.references.items()}
    schemes = {}
    for name, s in suite.schemes.items():
        update: dict[str, Any] = {}
        if s.checkpoint is not None:
            update["checkpoint"] = fix(s.checkpoint)
        if s.calibration is not None and s.calibration.dataset is not None:
            update["calibration"] = s.calibration.model_copy(update={"dataset": fix(s.calibration.dataset)})
        if isinstance(s.recipe, str):
            update["recipe"] = fix(s.recipe)
        schemes[name] = s.model_copy(update=update) if update else s
    tasks = {}
    for name, t in suite.tasks.items():
        update = {k: fix(getattr(t, k)) for k in ("perplexity", "include_path") if getattr(t, k) is not None}
        tasks[name] = t.model_copy(update=update) if update else t
    return suite.model_copy(update={"model": model, "references": references, "schemes": schemes, "tasks": tasks})
