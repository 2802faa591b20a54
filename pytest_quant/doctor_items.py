"""The checkpoint doctor as pytest items: one per (checkpoint, check).

Plugin layer. ``pytest --quant-doctor PATH`` (repeatable) collects only these items, one
:class:`DoctorCheckpoint` per PATH; a suite's ``checkpoint:`` schemes get the same items beside
their budget items (``doctor[<scheme>:zero_points]``). Each item passes when its check finds
nothing and fails listing every offending tensor; the engine
(:func:`pytest_quant.backends.doctor.diagnose`) runs once per checkpoint, when the first of its
items runs, and its :class:`~pytest_quant.errors.QuantConfigError` fails each item with the file and
field at fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_quant.backends.doctor import CHECKS, Diagnosis, checkable, diagnose
from pytest_quant.config import SuiteConfig
from pytest_quant.errors import QuantConfigError
from pytest_quant.suite import line_for

_DIAGNOSES = pytest.StashKey[dict[Path, Diagnosis | QuantConfigError]]()


def diagnosis_of(config: pytest.Config, folder: Path) -> Diagnosis:
    """The checkpoint's diagnosis, made once per session (every check's item reads it)."""
    known = config.stash.setdefault(_DIAGNOSES, {})
    if folder not in known:
        try:
            known[folder] = diagnose(folder)
        except QuantConfigError as exc:
            known[folder] = exc
    found = known[folder]
    if isinstance(found, QuantConfigError):
        raise found
    return found


def explain(diagnosis: Diagnosis, check: str) -> str:
    """A failing item's text: the checkpoint, its quantization, then one line per offending tensor."""
    found = diagnosis.of(check)
    head = f"checkpoint doctor: {len(found)} finding{'s' if len(found) != 1 else ''} of check {check!r} in "
    head += f"{diagnosis.folder} ({diagnosis.summary})"
    return "\n".join([head, *(f"  {f.line()}" for f in found)])


class DoctorItem(pytest.Item):
    """One check of one checkpoint: passes clean, fails with every offending tensor, skips when the
    checkpoint is not quantized (nothing to check)."""

    def __init__(self, *, folder: Path, check: str, label: str, line: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.folder = folder
        self.check = check
        self.label = label
        self.line = line
        self.add_marker("quant")

    def runtest(self) -> None:
        diagnosis = diagnosis_of(self.config, self.folder)
        if self.check not in diagnosis.checks:
            pytest.skip(f"{self.label}: {'; '.join(diagnosis.notes)}")
        if diagnosis.of(self.check):
            pytest.fail(explain(diagnosis, self.check), pytrace=False)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, QuantConfigError):
            return f"checkpoint doctor: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, (self.line - 1) if self.line else None, f"quant doctor: {self.label}:{self.check}"


def doctor_items(parent: pytest.Collector, folder: Path, label: str, line: int | None = None) -> Iterator[DoctorItem]:
    for check in CHECKS:
        yield DoctorItem.from_parent(
            parent, name=f"doctor[{label}:{check}]", folder=folder, check=check, label=label, line=line
        )


def suite_doctor_items(parent: pytest.Collector, suite: SuiteConfig, lines: dict[Any, int]) -> Iterator[DoctorItem]:
    """The doctor's items for each ``checkpoint:`` scheme of a suite (paths already resolved) whose
    config.json declares a GPTQ, AWQ or compressed-tensors quantization. Other folders (unquantized,
    missing, another quant_method) get none: the scheme's budget items say what is wrong with them."""
    for name, scheme in suite.schemes.items():
        if scheme.checkpoint is not None and checkable(scheme.checkpoint):
            line = line_for(lines, ("schemes", name, "checkpoint"))
            yield from doctor_items(parent, Path(scheme.checkpoint), label=name, line=line)


class DoctorCheckpoint(pytest.Collector):
    """A ``--quant-doctor`` folder: one item per check."""

    def __init__(self, *, folder: Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.folder = folder

    def collect(self) -> Iterator[DoctorItem]:
        return doctor_items(self, self.folder, label=self.folder.name)


def collect_doctor_only(session: pytest.Session, paths: tuple[str, ...]) -> bool | None:
    """With ``--quant-doctor``, collect the doctor's items for ``paths`` and nothing else (the steps of
    pytest's own collection, with our collectors in place of the command line's). None without it, and
    in pytest-xdist's controller, which collects nothing itself."""
    config = session.config
    if paths and config.args_source == pytest.Config.ArgsSource.ARGS and config.args:
        # the test paths would not be collected: a gate that passed them would go green on the doctor alone
        raise pytest.UsageError(
            f"--quant-doctor checks checkpoint folders and collects nothing else, so the test paths "
            f"{' '.join(config.args)} would not run; run them in another invocation"
        )
    if not paths or config.pluginmanager.hasplugin("dsession"):
        return None
    session.items = []
    try:
        for raw in dict.fromkeys(p.rstrip("/") or p for p in paths):
            folder = Path(raw).expanduser()
            folder = folder if folder.is_absolute() else Path(config.invocation_params.dir) / folder
            collector = DoctorCheckpoint.from_parent(session, name=raw, nodeid=raw, path=folder, folder=folder)
            session.ihook.pytest_collectstart(collector=collector)
            report = session.ihook.pytest_make_collect_report(collector=collector)
            session.ihook.pytest_collectreport(report=report)
            if report.passed:
                session.items.extend(node for node in report.result if isinstance(node, pytest.Item))
        config.hook.pytest_collection_modifyitems(session=session, config=config, items=session.items)
    finally:
        config.hook.pytest_collection_finish(session=session)
    session.testscollected = len(session.items)
    return True
