"""Where the suite's CPU goes, per test file: ``pytest -p tests.cpu_profile`` with ``EASEL_CPU_PROFILE=DIR``.

Each pytest process (each xdist worker) writes ``DIR/<worker>.json``: its collection's CPU seconds and, per
test file, the CPU seconds (user+sys of the process and of the children it has waited for) and wall seconds of
its tests' setup, call and teardown, module-scoped fixtures included. ``python -m tests.cpu_profile DIR [N]``
sums the workers into a table, then lists the N (40) tests that took the most CPU. CPU is the measure on a
shared machine: wall times move with the neighbours' load.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


_files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])  # file -> [cpu, wall, tests]
_tests: dict[str, list[float]] = {}  # test id -> [cpu, wall]
_marks: dict[str, float] = {}


def pytest_collection(session: pytest.Session) -> None:
    _marks["collection_start"] = _cpu()


def pytest_collection_finish(session: pytest.Session) -> None:
    _marks["collection_end"] = _cpu()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    cpu, wall = _cpu(), time.monotonic()
    yield
    cpu, wall = _cpu() - cpu, time.monotonic() - wall
    row = _files[item.nodeid.split("::")[0]]
    row[0] += cpu
    row[1] += wall
    row[2] += 1
    _tests[item.nodeid] = [cpu, wall]
    _write()  # after every test: a run cut short still leaves its figures


def pytest_sessionfinish(session: pytest.Session) -> None:
    _write()


def _write() -> None:
    folder = os.environ.get("EASEL_CPU_PROFILE")
    if not folder:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    report = {
        "startup_and_collection": _marks.get("collection_end", 0.0),
        "collection": _marks.get("collection_end", 0.0) - _marks.get("collection_start", 0.0),
        "total": _cpu(),
        "files": dict(_files),
        "tests": _tests,
    }
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"{worker}.json").write_text(json.dumps(report, indent=1))


def _table(folder: Path, slowest: int) -> None:
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    tests: dict[str, list[float]] = {}
    collection = total = 0.0
    for path in sorted(folder.glob("*.json")):
        report = json.loads(path.read_text())
        collection += report["startup_and_collection"]
        total += report["total"]
        for name, (cpu, wall, count) in report["files"].items():
            files[name][0] += cpu
            files[name][1] += wall
            files[name][2] += count
        tests.update(report.get("tests", {}))
    print(f"{'file':60} {'tests':>5} {'cpu s':>8} {'wall s':>8}")
    for name, (cpu, wall, count) in sorted(files.items(), key=lambda kv: -kv[1][0]):
        print(f"{name:60} {count:5d} {cpu:8.1f} {wall:8.1f}")
    print(f"{'start-up and collection, all processes':60} {'':5} {collection:8.1f}")
    print(f"{'total CPU of the pytest processes':60} {'':5} {total:8.1f}")
    print(f"\n{'slowest tests by CPU':100} {'cpu s':>8} {'wall s':>8}")
    for name, (cpu, wall) in sorted(tests.items(), key=lambda kv: -kv[1][0])[:slowest]:
        print(f"{name[:100]:100} {cpu:8.1f} {wall:8.1f}")


if __name__ == "__main__":
    _table(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 40)
