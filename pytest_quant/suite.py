"""YAML suite files → validated :class:`SuiteConfig` and the list of checks they ask for.

Logic layer. Errors name the file, the line and the field path
(``budgets[1].max_drop``) with the offending value, so a release engineer can
fix a suite without reading a traceback.

A suite may ``include:`` task sets kept in other YAML files (one level; see :func:`merge_includes`).
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


def _parse(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The YAML document of ``text`` and the line of every key and entry in it."""
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
    return data, lines


def load_suite_text(
    text: str, source: str, *, base: Path | None = None
) -> tuple[SuiteConfig, dict[tuple[Any, ...], int]]:
    """Parse and validate a suite; ``source`` names the file in errors, ``base`` is the folder its
    ``include:`` paths are relative to (default: ``source``'s folder)."""
    data, lines = _parse(text, source)
    if not isinstance(data, dict):
        raise QuantConfigError(
            f"a suite is a mapping with 'model', 'schemes', 'tasks' and 'budgets', got {type(data).__name__}",
            source=source,
        )
    included: dict[tuple[Any, ...], tuple[str, int]] = {}
    if "include" in data:
        data, included = merge_includes(data, lines, source, Path(source).parent if base is None else base)
    try:
        suite = SuiteConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, data, lines, source, included) from None
    return suite, lines


def load_suite(path: Path) -> tuple[SuiteConfig, dict[tuple[Any, ...], int]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantConfigError(f"cannot read suite: {exc}", source=str(path)) from None
    return load_suite_text(text, str(path))


# What an included file may hold, and the task fields that name files (relative to the file that wrote them).
INCLUDABLE: tuple[str, ...] = ("tasks",)
_TASK_PATHS: tuple[str, ...] = ("perplexity", "include_path", "mt_bench")


def merge_includes(
    data: dict[str, Any], lines: dict[tuple[Any, ...], int], source: str, base: Path
) -> tuple[dict[str, Any], dict[tuple[Any, ...], tuple[str, int]]]:
    """``data`` with its ``include:`` files' tasks merged in, and where each merged key was written.

    ``include`` is a path or a list of paths, relative to ``base``. An included file is a mapping
    with ``tasks:`` only (no ``include`` of its own: one level). Its tasks come first, in order; a
    task two included files define is an error. A task the suite itself also lists is merged field
    by field, the suite's fields winning: that is how a suite states a deviation from a shared task
    set (``arc_challenge: {num_fewshot: 0}``), in the suite, never silently. The file paths of an
    included task (``perplexity``, ``include_path``, ``mt_bench``) are relative to its own file.
    Errors name the file, the line and the field.
    """

    def fail(
        message: str, path: tuple[Any, ...], *, where: str = source, at: dict[tuple[Any, ...], int] | None = None
    ) -> QuantConfigError:
        return QuantConfigError(
            message, source=where, field=dotted(path), line=line_for(lines if at is None else at, path)
        )

    paths = data["include"]
    listed = isinstance(paths, list)
    paths = [paths] if isinstance(paths, str) else paths
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        raise fail(
            f"include names YAML files of tasks, a path or a list of paths (got {data['include']!r})", ("include",)
        )
    own = data.get("tasks")
    if own is not None and not isinstance(own, dict):
        raise fail(f"tasks is a mapping of task names to settings (got {type(own).__name__})", ("tasks",))
    tasks: dict[str, Any] = {}
    origin: dict[tuple[Any, ...], tuple[str, int]] = {}
    for i, raw in enumerate(paths):
        path = Path(raw).expanduser()
        path = path if path.is_absolute() else base / path
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise fail(
                f"cannot read included file {str(path)!r}: {why}", ("include", i) if listed else ("include",)
            ) from None
        where = str(path)
        inc, inc_lines = _parse(text, where)
        if not isinstance(inc, dict) or not isinstance(inc.get("tasks"), dict) or not inc["tasks"]:
            raise QuantConfigError(
                "an included file is a mapping with 'tasks:' (task names to settings)", source=where, line=1
            )
        for key in inc:
            if key not in INCLUDABLE:
                hint = " (one level: list every file in the suite's own include)" if key == "include" else ""
                raise fail(
                    f"an included file holds {', '.join(INCLUDABLE)} only; unknown key {key!r}{hint}",
                    (key,),
                    where=where,
                    at=inc_lines,
                )
        for name, body in inc["tasks"].items():
            at = ("tasks", name)
            if name in tasks:
                first = origin[at]
                raise fail(f"task {name!r} is also defined in {first[0]}:{first[1]}", at, where=where, at=inc_lines)
            if body is not None and not isinstance(body, dict):
                raise fail(f"a task's settings are a mapping (got {body!r})", at, where=where, at=inc_lines)
            body = dict(body or {})
            for key in _TASK_PATHS:
                if isinstance(body.get(key), str) and not Path(body[key]).expanduser().is_absolute():
                    body[key] = str((path.parent / Path(body[key]).expanduser()).resolve())
            tasks[name] = body
            origin[at] = (where, line_for(inc_lines, at) or 1)
            for key in body:
                origin[at + (key,)] = (where, line_for(inc_lines, at + (key,)) or origin[at][1])
    for name, body in (own or {}).items():
        if name in tasks:
            if body is not None and not isinstance(body, dict):
                raise fail(
                    f"task {name!r} comes from an included file; the suite overrides its fields with a mapping "
                    f"(got {body!r})",
                    ("tasks", name),
                )
            for key in body or {}:
                origin.pop(("tasks", name, key), None)  # the suite's own field
            tasks[name] = {**tasks[name], **(body or {})}
        else:
            tasks[name] = body
    merged = {k: v for k, v in data.items() if k != "include"}
    merged["tasks"] = tasks
    return merged, origin


def _config_error(
    exc: ValidationError,
    data: Any,
    lines: dict,
    source: str,
    included: dict[tuple[Any, ...], tuple[str, int]] | None = None,
) -> QuantConfigError:
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
    where = _included_origin(path, lines, included or {})
    if where is not None:
        source, line = where
    return QuantConfigError(text, source=source, field=dotted(path), line=line)


def _included_origin(
    path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], included: dict[tuple[Any, ...], tuple[str, int]]
) -> tuple[str, int] | None:
    """The included file and line that wrote ``path``, where it is deeper there than in the suite itself."""
    for depth in range(len(path), 0, -1):
        prefix = path[:depth]
        if prefix in lines:  # the suite wrote it (a task both define: the suite's override)
            return None
        if prefix in included:
            return included[prefix]
    return None


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

    @property
    def sides(self) -> tuple[str, ...]:
        """What the check judges: a comparison's two sides (schemes, ``baseline`` or reference models), else
        its scheme (``baseline`` for a floor on the model as is)."""
        cmp = self.budget.compare
        if cmp is not None:
            return (cmp.better, cmp.worse)
        return () if self.scheme is None else (self.scheme,)


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
        paths = ("perplexity", "include_path", "mt_bench")
        update = {k: fix(getattr(t, k)) for k in paths if getattr(t, k) is not None}
        if t.judge is not None and t.judge.endpoint is None and _looks_like_path(t.judge.model, base):
            update["judge"] = t.judge.model_copy(update={"model": fix(t.judge.model)})  # a local judge's folder
        tasks[name] = t.model_copy(update=update) if update else t
    return suite.model_copy(update={"model": model, "references": references, "schemes": schemes, "tasks": tasks})
