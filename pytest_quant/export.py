"""``--quant-export-datasets=DIR``: write the data the collected suites' lm-eval tasks read into a mirror.

Plugin layer. On a machine with hub access, after collection (and after ``-k``/``-m`` selection),
the controlling process gathers the lm-eval tasks of the selected suite items, has
:func:`pytest_quant.backends.datasets.export_datasets` write their evaluation and few-shot splits
into ``DIR`` in the mirror layout, prints what it wrote, and deselects every item: the session only
exports, and ends with exit code 0 (nothing is quantized or evaluated). ``--quant-datasets=DIR``
reads the mirror back on an air-gapped machine. Perplexity and divergence tasks read no lm-eval data
and are skipped with a note.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pytest_quant.config import TaskConfig
from pytest_quant.errors import QuantConfigError
from pytest_quant.session import QuantSession


def register(config: pytest.Config, session: QuantSession) -> None:
    """With ``--quant-export-datasets``, the controlling process's :class:`DatasetExport` plugin."""
    if session.options.export_datasets is None:
        return
    if config.getoption("numprocesses", None) or config.getoption("dist", "no") != "no":
        raise pytest.UsageError("--quant-export-datasets runs in the controlling process only; drop -n/--dist")
    if session.options.strict:  # an export runs no test and exits 0: never let it stand in for a release gate
        raise pytest.UsageError(
            "--quant-export-datasets only writes data and runs no test, so it cannot be a --quant-strict release "
            "gate; export in its own job without --quant-strict (or ini quant_strict)"
        )
    config.pluginmanager.register(DatasetExport(session), "quant-export")


class DatasetExport:
    """Exports after selection (``trylast``: after ``-k``/``-m``), then deselects every item; the
    session's "no tests ran" exit status becomes 0 once the export succeeded."""

    def __init__(self, session: QuantSession):
        self.session = session
        self.manifest: dict[str, Any] | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        dest = self.session.options.export_datasets
        assert dest is not None
        try:
            self.manifest = export_collected(items, dest, self.session.progress)
        except (QuantConfigError, OSError, ConnectionError) as exc:
            pytest.exit(f"--quant-export-datasets={dest}: {exc}", returncode=pytest.ExitCode.TESTS_FAILED)
        if items:
            config.hook.pytest_deselected(items=list(items))
            items[:] = []

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.manifest is not None and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            session.exitstatus = pytest.ExitCode.OK


def collected_tasks(items: Sequence[pytest.Item]) -> dict[str, TaskConfig]:
    """The suite tasks the selected suite items evaluate, by suite task name (first suite wins)."""
    from pytest_quant.items import QuantItem

    tasks: dict[str, TaskConfig] = {}
    for item in items:
        if not isinstance(item, QuantItem):
            continue
        check = item.check
        for name in check.pool or ((check.task,) if check.task is not None else ()):
            task = item.suite.tasks.get(name)
            if task is not None:
                tasks.setdefault(f"{item.path}::{name}", task)
    return tasks


def export_collected(items: Sequence[pytest.Item], dest: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Export the data of ``items``' lm-eval tasks into ``dest``; returns the manifest (``{}`` when
    no task reads lm-eval data). Each include_path's tasks go in one call (one TaskManager)."""
    from pytest_quant.backends.datasets import EXPORT_MANIFEST, export_datasets

    by_include: dict[str | None, dict[str, str | None]] = {}
    for key, task in collected_tasks(items).items():
        if task.kind != "lm_eval":
            progress(f"export: {key.rsplit('::', 1)[-1]} is a {task.kind} task; it reads no lm-eval data, skipped")
            continue
        wanted = by_include.setdefault(task.include_path, {})
        wanted.setdefault(task.lm_eval_task, task.split)
    manifest: dict[str, Any] = {}
    for include_path, wanted in by_include.items():
        splits = {name: split for name, split in wanted.items() if split is not None}
        manifest = export_datasets(list(wanted), dest, include_path=include_path, extra_splits=splits)
        for name in wanted:
            progress(f"export: {name}: {_describe(manifest, name)}")
    if manifest:
        progress(f"export: manifest {dest / EXPORT_MANIFEST}; read it back with --quant-datasets={dest}")
    else:
        progress("export: the selected items read no lm-eval data; nothing written")
    return manifest


def _describe(manifest: dict[str, Any], name: str) -> str:
    """What was written for lm-eval task (or group) ``name``."""
    parts = []
    for leaf in manifest["requested"].get(name, ()):
        if leaf in manifest["skipped"]:
            parts.append(f"{leaf}: {manifest['skipped'][leaf]}")
            continue
        entry = manifest["tasks"][leaf]
        splits = ", ".join(f"{s} ({v['rows']} rows) -> {v['folder']}" for s, v in entry["splits"].items())
        parts.append(f"{leaf}: {splits}" if leaf != name else splits)
    if len(parts) > 3:
        return f"{len(parts)} tasks ({parts[0]}; ...)"
    return "; ".join(parts) or "no task"
