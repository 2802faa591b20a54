"""The accuracy gates teams already have, collected as pytest-quant suites.

Logic layer: a YAML file in one of two public formats in, a :class:`SuiteConfig`
out; nothing heavy is imported. Files matched by the ini option
``quant_import_globs`` are collected through the same items as ``*.quant.yaml``
suites, so a team keeps its files and gets paired statistics, baselines and
reports.

- vLLM (``.buildkite/lm-eval-harness/configs/*.yaml`` in vllm-project/vllm): :mod:`.vllm`;
- llm-compressor (``tests/lmeval/configs/*.yaml`` in vllm-project/llm-compressor): :mod:`.llmcompressor`.

Anything the formats can say that pytest-quant cannot do faithfully (multimodal
backends and model classes, non-causal models) is a :class:`QuantConfigError` naming
the file, the line and the field, never a silent approximation; collected, such a file
becomes one item that fails (or skips, ini ``quant_import_errors = skip``) with that
message, and the other files run. ROCm-only keys are left out with a
:class:`PytestQuantWarning`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path, PurePath
from typing import Any

import yaml
from pydantic import ValidationError

from pytest_quant.config import SuiteConfig
from pytest_quant.errors import QuantConfigError
from pytest_quant.importers import llmcompressor, vllm
from pytest_quant.importers.llmcompressor import LLMC_DEFAULT_RECOVERY
from pytest_quant.importers.reader import FieldPath, Reader
from pytest_quant.importers.vllm import VLLM_DEFAULT_RTOL

# The line-tracking YAML loader and field-path helpers of the native suite format.
from pytest_quant.suite import LineLoader, compose_lines, line_for

__all__ = [
    "LLMC_DEFAULT_RECOVERY",
    "VLLM_DEFAULT_RTOL",
    "detect_format",
    "from_llmcompressor_config",
    "from_vllm_config",
    "glob_leads_into",
    "import_config",
    "load_imported",
    "load_imported_text",
    "matches_glob",
]


# -- entry points -----------------------------------------------------------------
def detect_format(data: Any, source: str = "<config>") -> str:
    """``"vllm"`` or ``"llm-compressor"``, by the keys each format requires."""
    if isinstance(data, dict):
        if "model_name" in data and "tasks" in data:
            return "vllm"
        if "model" in data and ("lmeval" in data or "cadence" in data or "scheme" in data or "recipe" in data):
            return "llm-compressor"
    raise QuantConfigError(
        "neither a vLLM lm-eval config (model_name, tasks) nor an llm-compressor lmeval config "
        "(cadence, model, scheme or recipe, lmeval)",
        source=source,
    )


def _validate(suite: dict[str, Any], source: str) -> SuiteConfig:
    try:
        return SuiteConfig.model_validate(suite)
    except (ValidationError, ValueError) as exc:
        err = exc.errors(include_url=False)[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)}
        loc = ".".join(str(p) for p in err.get("loc", ()) if not (isinstance(p, str) and p.startswith("function")))
        msg = str(err.get("msg", exc)).removeprefix("Value error, ")
        raise QuantConfigError(
            f"cannot be mapped to a pytest-quant suite: {loc + ': ' if loc else ''}{msg}", source=source
        ) from None


def from_vllm_config(
    data: Any, source: str, lines: dict[FieldPath, int] | None = None, *, default_tp: int = 1
) -> SuiteConfig:
    """A vLLM ``.buildkite/lm-eval-harness/configs/*.yaml`` file (already parsed) as a suite."""
    suite, _ = vllm.suite_from_vllm(data, Reader(source, lines, vllm.FORMAT), default_tp=default_tp)
    return _validate(suite, source)


def from_llmcompressor_config(data: Any, source: str, lines: dict[FieldPath, int] | None = None) -> SuiteConfig:
    """An llm-compressor ``tests/lmeval/configs/*.yaml`` file (already parsed) as a suite."""
    suite, _ = llmcompressor.suite_from_llmcompressor(data, Reader(source, lines, llmcompressor.FORMAT))
    return _validate(suite, source)


def import_config(
    data: Any, source: str, lines: dict[FieldPath, int] | None = None, *, default_tp: int = 1
) -> tuple[SuiteConfig, dict[FieldPath, int]]:
    """Either format as a suite, with the line of each budget's origin in the file (for item locations)."""
    fmt = detect_format(data, source)
    if fmt == "vllm":
        suite, origins = vllm.suite_from_vllm(data, Reader(source, lines, vllm.FORMAT), default_tp=default_tp)
    else:
        suite, origins = llmcompressor.suite_from_llmcompressor(data, Reader(source, lines, llmcompressor.FORMAT))
    config = _validate(suite, source)
    budget_lines = {
        ("budgets", i): line for i, o in enumerate(origins) if (line := line_for(lines or {}, o)) is not None
    }
    return config, budget_lines


def load_imported_text(text: str, source: str, *, default_tp: int = 1) -> tuple[SuiteConfig, dict[FieldPath, int]]:
    try:
        node = yaml.compose(text, Loader=LineLoader)
        data = yaml.load(text, Loader=LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise QuantConfigError(
            f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
            source=source,
            line=mark.line + 1 if mark is not None else None,
        ) from None
    lines: dict[FieldPath, int] = {}
    if node is not None:
        try:
            compose_lines(node, (), lines)
        except QuantConfigError as exc:
            raise QuantConfigError(exc.detail, source=source, field=exc.field, line=exc.line) from None
    return import_config(data, source, lines, default_tp=default_tp)


def load_imported(path: Path, *, default_tp: int = 1) -> tuple[SuiteConfig, dict[FieldPath, int]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantConfigError(f"cannot read config: {exc}", source=str(path)) from None
    return load_imported_text(text, str(path), default_tp=default_tp)


# -- the ini globs ---------------------------------------------------------------------
def _parts(path: PurePath | str, root: Path) -> tuple[str, ...]:
    p = PurePath(path)
    try:
        p = p.relative_to(root)
    except ValueError:
        pass
    return tuple(p.as_posix().split("/"))


def _match(parts: tuple[str, ...], pattern: tuple[str, ...], *, prefix: bool) -> bool:
    """Component-wise glob match (``*`` stays inside a folder, ``**`` spans folders).

    ``prefix``: a folder on the way to a match."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:], prefix=prefix) for i in range(len(parts) + 1)) or (
            prefix and bool(parts)
        )
    if not parts:
        return prefix
    return fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:], prefix=prefix)


def matches_glob(path: PurePath | str, root: Path, pattern: str) -> bool:
    """Does ``path`` match ``pattern`` (relative to ``root``, or absolute)?"""
    pat = PurePath(pattern)
    parts = tuple(PurePath(path).as_posix().split("/")) if pat.is_absolute() else _parts(path, root)
    return _match(parts, tuple(pat.as_posix().split("/")), prefix=False)


def glob_leads_into(folder: PurePath | str, root: Path, pattern: str) -> bool:
    """Can files under ``folder`` match ``pattern``? (So hidden folders such as ``.buildkite`` are walked.)"""
    pat = PurePath(pattern)
    parts = tuple(PurePath(folder).as_posix().split("/")) if pat.is_absolute() else _parts(folder, root)
    return parts == (".",) or _match(parts, tuple(pat.as_posix().split("/"))[:-1], prefix=True)
