"""The container test's figures (image size, build and start times, stop's exit code), printed after the run.

A test records each with ``record_property("container: NAME", value)``; the figures travel in the test reports,
so they are printed by the process that writes the summary, with pytest-xdist workers too.
"""

from __future__ import annotations

import pytest

PREFIX = "container: "


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = {
        name.removeprefix(PREFIX): value
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
        for name, value in report.user_properties
        if name.startswith(PREFIX)
    }
    if figures:
        terminalreporter.write_sep("-", "container figures")
        for name, value in figures.items():
            terminalreporter.write_line(f"{name}: {value}")
