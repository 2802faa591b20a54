"""Rows travel from items to the controlling process, and become the summary and the reports.

Plugin layer. An item puts its row in ``user_properties`` (so rows cross pytest-xdist workers);
the :class:`QuantReporter`, registered on the controlling process only, gathers them, prints the
summary table and writes the JSON / Markdown / PNG reports. It only reports: a budget fails its
own item.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_quant.session import QuantSession

ROW_PROPERTY = "pytest_quant_row"
BASELINE_PROPERTY = "pytest_quant_baseline_written"
JUNIT_FIELDS = ("baseline", "value", "drop", "ci_low", "ci_high", "recovery", "ratio", "n", "budget", "mode", "verdict")


def report_row(user_properties: list[tuple[str, object]], row: dict[str, Any]) -> None:
    """The row for the summary and reports, plus one ``quant_*`` property per number for ``--junitxml``."""
    user_properties.append((ROW_PROPERTY, json.dumps(row, default=str)))
    for key in JUNIT_FIELDS:
        if row.get(key) is not None:
            user_properties.append((f"quant_{key}", row[key]))


def report_baselines_written(user_properties: list[tuple[str, object]], session: QuantSession) -> None:
    """Hand the baselines the session wrote while this item ran to the controlling process."""
    for written in session.baselines_written:
        user_properties.append((BASELINE_PROPERTY, written))
    session.baselines_written.clear()


def write_png(path: Path, rows: list[dict[str, Any]]) -> str | None:
    """Write the Pareto plot; a line saying why not when it cannot be (never fails the run)."""
    from pytest_quant.atomic import atomic_write_bytes
    from pytest_quant.report import pareto_png

    try:
        png = pareto_png(rows)
    except ImportError:
        return f"plot: not written to {path}: matplotlib is not installed (pip install 'pytest-quant[plot]')"
    if png is None:
        return f"plot: not written to {path}: no row has both a task value and a weight memory"
    atomic_write_bytes(path, png)
    return None


class QuantReporter:
    """Registered on the controlling process only: gathers rows, prints the table, writes the reports."""

    def __init__(self, config: pytest.Config, session: QuantSession):
        self.config = config
        self.session = session
        self.png_status: str | None = None  # why the plot was not written, when it was not

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == ROW_PROPERTY:
                row = json.loads(str(value))
                if hasattr(report, "wasxfail"):
                    row["verdict"] = "xfail" if report.skipped else "xpass"
                self.session.rows.append(row)
            elif key == BASELINE_PROPERTY and value not in self.session.baselines_written:
                self.session.baselines_written.append(str(value))

    def _in_suite_order(self) -> None:
        """Rows arrive in completion order (xdist); list them as their suites declare them."""
        rows = self.session.rows
        order = {suite: i for i, suite in enumerate(dict.fromkeys(r.get("suite", "") for r in rows))}
        rows.sort(key=lambda r: (order[r.get("suite", "")], r.get("position", float("inf"))))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from pytest_quant.report import table_lines

        self._in_suite_order()
        written = list(dict.fromkeys(self.session.baselines_written))
        if not self.session.rows and not written:
            return
        terminalreporter.section("pytest-quant")
        if written:
            terminalreporter.write_line(f"baselines written ({len(written)}):")
            for w in written:
                terminalreporter.write_line(f"  {w}")
        for line in table_lines(self.session.rows) if self.session.rows else ():
            terminalreporter.write_line(line)
        options = self.session.options
        for path in (options.report_json, options.report_md):
            if path is not None:
                terminalreporter.write_line(f"report: {path}")
        if options.report_png is not None:
            terminalreporter.write_line(self.png_status or f"plot: {options.report_png}")

    def pytest_sessionfinish(self) -> None:
        from pytest_quant.atomic import atomic_write_text
        from pytest_quant.report import markdown, to_json

        self._in_suite_order()
        options = self.session.options
        if options.report_json is not None:
            atomic_write_text(options.report_json, to_json(self.session.rows) + "\n")
        if options.report_md is not None:
            atomic_write_text(options.report_md, markdown(self.session.rows))
        if options.report_png is not None:
            self.png_status = write_png(options.report_png, self.session.rows)
