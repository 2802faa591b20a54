"""pytest-quant's hooks: each hands off in a line or three.

Options live in :mod:`~pytest_quant.options`, suite collection and items in
:mod:`~pytest_quant.items`, fixtures in :mod:`~pytest_quant.fixtures`, the summary and reports in
:mod:`~pytest_quant.reporter`, devices in :mod:`~pytest_quant.devices`. Nothing imported here
imports torch, transformers, vllm, llmcompressor or lm_eval (``pytest --help`` stays fast).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from pytest_quant import devices, doctor_items, export, items, options
from pytest_quant.fixtures import quant_baseline, quant_check, quant_eval, quant_model
from pytest_quant.reporter import QuantReporter
from pytest_quant.session import QuantSession

__all__ = ["quant_baseline", "quant_check", "quant_eval", "quant_model"]


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    items.declare_markers(config)
    devices.pin_threads()
    devices.gpu_group(config)
    session = QuantSession(options.options_from_config(config))
    config.stash[items.SESSION_KEY] = session
    if not hasattr(config, "workerinput"):  # the controlling process: it prints and reports
        session.progress = _progress_printer(config)
        config.pluginmanager.register(QuantReporter(config, session), "quant-reporter")
        export.register(config, session)


def _progress_printer(config: pytest.Config):  # noqa: ANN202
    def progress(msg: str) -> None:
        # Looked up when used: the terminal reporter registers after pytest_configure runs.
        tr = config.pluginmanager.getplugin("terminalreporter")
        capman = config.pluginmanager.getplugin("capturemanager")
        if tr is None:
            return
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            tr.write_line(f"[pytest-quant] {msg}")

    return progress


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> bool | None:
    """``--quant-doctor PATH``: the checkpoint doctor's items for PATH, and nothing else."""
    return doctor_items.collect_doctor_only(session, items.get_session(session.config).options.doctor)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    return items.collect_file(file_path, parent)


@pytest.hookimpl(tryfirst=True)
def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    return items.walk_into_imports(collection_path, config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from pytest_quant.items import validate_markers  # the parameter's name hides the module's

    validate_markers(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    items.record_families(session.config, session.items)


def pytest_runtest_setup(item: pytest.Item) -> None:
    devices.skip_without_devices(item)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201
    report = yield
    return items.at_item_location(item, report)
