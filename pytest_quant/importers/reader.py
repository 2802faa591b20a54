"""Reading an upstream config: typed field access whose errors name the file, the line and the field.

Logic layer, shared by the importers of each format (:mod:`.vllm`, :mod:`.llmcompressor`).
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

from pytest_quant.errors import PytestQuantWarning, QuantConfigError
from pytest_quant.suite import dotted, line_for

NO = object()  # "no default": the field is required
FieldPath = tuple[Any, ...]


class Reader:
    """Typed field access whose errors name the file, the line and the field path."""

    def __init__(self, source: str, lines: dict[FieldPath, int] | None, fmt: str):
        self.source = source
        self.lines = lines or {}
        self.fmt = fmt

    def error(self, path: FieldPath, message: str, value: Any = NO) -> QuantConfigError:
        text = message if value is NO else f"{message} (got {value!r})"
        return QuantConfigError(text, source=self.source, field=dotted(path), line=line_for(self.lines, path))

    def warn(self, path: FieldPath, message: str) -> None:
        warnings.warn_explicit(
            PytestQuantWarning(f"{dotted(path)}: {message}"),
            category=None,
            filename=self.source,
            lineno=line_for(self.lines, path) or 0,
        )

    def mapping(self, data: Any, path: FieldPath, known: tuple[str, ...] | frozenset[str] | None) -> dict[str, Any]:
        """``data`` as a mapping whose keys are all ``known`` (any string key when ``known`` is None)."""
        if not isinstance(data, dict):
            raise self.error(path, "expected a mapping", type(data).__name__)
        for key in data:
            if not isinstance(key, str) or (known is not None and key not in known):
                what = (
                    f"for {self.fmt} (known: {', '.join(sorted(known))})" if known is not None else "(keys are names)"
                )
                raise self.error(path + (key,), f"unknown key {key!r} {what}")
        return data

    def text(self, data: dict, path: FieldPath, key: str, default: Any = NO) -> Any:
        v = data.get(key, default)
        if v is NO:
            raise self.error(path + (key,), "required")
        if v is not default and (not isinstance(v, str) or not v.strip()):
            raise self.error(path + (key,), "expected a non-empty string", v)
        return v

    def integer(
        self, data: dict, path: FieldPath, key: str, default: Any = NO, *, minimum: int = 0, nullable: bool = False
    ) -> Any:
        v = data.get(key, default)
        if v is NO:
            raise self.error(path + (key,), "required")
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.error(path + (key,), f"expected a whole number >= {minimum}", v)
        return v

    def number(
        self,
        data: dict,
        path: FieldPath,
        key: str,
        default: Any = NO,
        *,
        low: float,
        high: float,
        low_open: bool = False,
    ) -> Any:
        v = data.get(key, default)
        if v is NO:
            raise self.error(path + (key,), "required")
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or not math.isfinite(v)
            or v > high
            or v < low
            or (low_open and v == low)
        ):
            bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
            raise self.error(path + (key,), f"expected a number in {bounds}", v)
        return float(v)

    def flag(self, data: dict, path: FieldPath, key: str, default: bool) -> bool:
        v = data.get(key, default)
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"  # vLLM's runner formats flags into a model_args string
        if not isinstance(v, bool):
            raise self.error(path + (key,), "expected true or false", v)
        return v

    def metric_name(self, name: Any, path: FieldPath, *, bare_is_unfiltered: bool = False) -> str:
        """lm-eval's ``metric,filter`` key. ``bare_is_unfiltered``: a name without a filter is the
        unfiltered one lm-eval reports as ``metric,none`` (said in a warning)."""
        if bare_is_unfiltered and isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_@.-]+", name):
            self.warn(path, f"{name!r} names no filter: read as lm-eval's unfiltered {name + ',none'!r}")
            return name + ",none"
        if not isinstance(name, str) or name.count(",") != 1 or not all(p.strip() for p in name.split(",")):
            raise self.error(path, "a metric is lm-eval's 'metric,filter' key such as 'exact_match,strict-match'", name)
        return name


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "metric"


def task_keys(task: str, metrics: list[str]) -> list[str]:
    """One suite task per (lm-eval task, metric), named readably: ``gsm8k-strict-match``, ``arc_easy-acc_norm``."""
    if len(metrics) <= 1:
        return [slug(task)]
    names = [m.split(",", 1)[0] for m in metrics]
    filters = [m.split(",", 1)[1] for m in metrics]
    if len(set(names)) == 1:
        parts = filters
    elif len(set(filters)) == 1:
        parts = names
    else:
        parts = [f"{n}-{f}" for n, f in zip(names, filters, strict=True)]
    return [f"{slug(task)}-{slug(p)}" for p in parts]


def or_none(metrics: list[str]) -> list[str | None]:
    """The metrics named, or one ``None`` (the task's default metric) when none is."""
    return list(metrics) if metrics else [None]


def percent(fraction: float) -> str:
    return f"{round(fraction * 100, 9):.10g}%"


def validate_chat(r: Reader, data: dict, at: FieldPath, chat: bool, multiturn: bool, shots: int | None) -> None:
    """lm-eval's two flags: few-shot examples as turns need a chat template."""
    path = at + ("fewshot_as_multiturn" if "fewshot_as_multiturn" in data else "apply_chat_template",)
    if multiturn and not chat:
        raise r.error(path, "fewshot_as_multiturn needs apply_chat_template")
