"""The container test's figures (image size, build and start times, stop's exit code), printed after the run."""

from __future__ import annotations

import pytest

FIGURES: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.write_sep("-", "container figures")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")
