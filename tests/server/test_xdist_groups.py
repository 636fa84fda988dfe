"""scripts/test.sh's xdist set-up, checked on a real two-worker session with the pytest and xdist installed.

tests/lanes.py groups tests that share a heavy server, a Ray instance or a trained model. pytest 9.2 reads a
test's id from a field xdist 3.8 does not rewrite, so groups were silently ignored there; tests/priority.py
lowers the priority of every worker but the Ray group's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.priority import LOWER_BY, RAY_GROUP

REPO = Path(__file__).resolve().parents[2]

GROUPED = """
import os
import pytest


@pytest.mark.xdist_group("shared")
@pytest.mark.parametrize("n", range(4))
def test_grouped(n):
    with open(os.path.join(os.environ["GROUP_OUT"], f"worker-{n}"), "w") as out:
        out.write(os.environ.get("PYTEST_XDIST_WORKER", "none"))
"""

PRIORITY_CONFTEST = """
from tests import priority


def pytest_configure(config):
    priority.register(config)
"""
NICE_RECORDED = f"""
import os
import pytest


def record(name):
    with open(os.path.join(os.environ["GROUP_OUT"], name), "w") as out:
        out.write(f"{{os.environ['PYTEST_XDIST_WORKER']}} {{os.nice(0)}}")


@pytest.mark.xdist_group({RAY_GROUP!r})
def test_on_ray():
    record("ray")


@pytest.mark.parametrize("n", range(6))
def test_other(n):
    record(f"other-{{n}}")
"""


def run_two_workers(folder: Path, test_file: str) -> None:
    """pytest on ``folder/test_file`` with two workers, as scripts/test.sh runs the suite; tests write what they
    saw into files in ``folder`` (``GROUP_OUT``)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup"]
    run = subprocess.run(
        [*command, "--no-loadscope-reorder", test_file],
        cwd=folder,
        env={**os.environ, "GROUP_OUT": str(folder), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_group_runs_on_one_worker(tmp_path: Path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    run_two_workers(tmp_path, "test_grouped.py")
    workers = {(tmp_path / f"worker-{n}").read_text() for n in range(4)}
    assert len(workers) == 1 and workers != {"none"}, workers


def test_only_the_ray_groups_worker_keeps_its_priority(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(PRIORITY_CONFTEST)
    (tmp_path / "test_nice.py").write_text(NICE_RECORDED)  # the Ray group first, as tests/schedule.py puts it
    run_two_workers(tmp_path, "test_nice.py")
    base = os.nice(0)
    ray_worker, ray_nice = (tmp_path / "ray").read_text().split()
    assert int(ray_nice) == base
    others = [(tmp_path / f"other-{n}").read_text().split() for n in range(6)]
    elsewhere = {int(nice) for worker, nice in others if worker != ray_worker}
    assert elsewhere == {min(base + LOWER_BY, 19)}  # 19: the lowest priority there is
