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
JUNIT_FIELDS = (
    "baseline", "value", "drop", "ci_low", "ci_high", "recovery", "ratio", "n", "budget", "mode", "verdict", "evidence",
    "items_needed",
)  # fmt: skip


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


def _first_line(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr or "")
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    errors = [ln.removeprefix("E").strip() for ln in lines if ln.startswith("E ")]
    return (errors[-1] if errors else lines[-1] if lines else "").removeprefix("Skipped: ")[:300]


def _remember_measurements(cache_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Keep each judged scheme's measured flip rate and spread (``planning.json`` in the cache), so the next
    collection plans with measured numbers instead of assumed ones."""
    from pytest_quant.planning import PLANNING_FILE, measurement_key, read_measurements

    found = {}
    for r in rows:
        if r.get("kind") == "efficiency" or r.get("pooled") or not r.get("task") or not r.get("n"):
            continue
        scheme = str(r.get("scheme", "")).split(" vs ")[0]
        m = {"flip_rate": r.get("flip_rate"), "spread": r.get("spread"), "n": r.get("n")}
        if m["flip_rate"] is not None or m["spread"] is not None:
            found[measurement_key(str(r.get("model")), scheme, str(r["task"]))] = m
    if not found:
        return
    try:
        from filelock import FileLock

        from pytest_quant.atomic import atomic_write_text

        cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache_dir / (PLANNING_FILE + ".lock")), timeout=60):
            data = {**read_measurements(cache_dir), **found}
            atomic_write_text(cache_dir / PLANNING_FILE, json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass  # planning notes are a convenience: a read-only cache loses nothing else


def write_png(path: Path, rows: list[dict[str, Any]]) -> str | None:
    """Write the Pareto plot; a line saying why not when it cannot be (never fails the run)."""
    from pytest_quant.atomic import atomic_write_bytes
    from pytest_quant.plot import pareto_png

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
        self.unevaluated: dict[str, str] = {}  # node id -> why it was not evaluated (skipped, errored, not collected)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A file that could not be collected (an import error, a skip at module level) hides its items."""
        if report.failed or report.skipped:
            what = "not collected" if report.failed else "not collected (skipped)"
            self.unevaluated.setdefault(report.nodeid or "<session>", f"{what}: {_first_line(report)}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "quant" in report.keywords and not hasattr(report, "wasxfail"):
            if report.skipped:
                self.unevaluated.setdefault(report.nodeid, f"skipped: {_first_line(report)}")
            elif report.failed and report.when != "call":
                self.unevaluated.setdefault(report.nodeid, f"errored in {report.when}: {_first_line(report)}")
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
        from pytest_quant.report import agreement_lines, release_lines, table_lines

        self._in_suite_order()
        written = list(dict.fromkeys(self.session.baselines_written))
        strict = self._strict_lines()
        if not self.session.rows and not written and not strict:
            return
        terminalreporter.section("pytest-quant")
        for line in strict:
            terminalreporter.write_line(line, red=self.session.options.strict, bold=self.session.options.strict)
        if written:
            terminalreporter.write_line(f"baselines written ({len(written)}):")
            for w in written:
                terminalreporter.write_line(f"  {w}")
        for line in table_lines(self.session.rows) if self.session.rows else ():
            terminalreporter.write_line(line)
        for line in [*agreement_lines(self.session.rows), *release_lines(self.session.rows)]:
            terminalreporter.write_line(line)
        options = self.session.options
        for path in (options.report_json, options.report_md):
            if path is not None:
                terminalreporter.write_line(f"report: {path}")
        if options.report_png is not None:
            terminalreporter.write_line(self.png_status or f"plot: {options.report_png}")

    def _strict_lines(self) -> list[str]:
        if not self.unevaluated:
            return []
        head = (
            f"--quant-strict: the session fails: {len(self.unevaluated)} quant item(s) or file(s) were not evaluated"
            if self.session.options.strict
            else f"{len(self.unevaluated)} quant item(s) or file(s) were not evaluated "
            "(--quant-strict fails the session)"
        )
        return [head, *(f"  {node}: {why}" for node, why in self.unevaluated.items())]

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
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
        _remember_measurements(options.cache_dir, self.session.rows)
        if options.strict and self.unevaluated and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
