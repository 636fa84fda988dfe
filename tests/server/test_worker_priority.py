"""tests/priority.py: in an xdist session, the worker that runs the Ray group keeps its priority and every other
worker lowers its own at its first test, so the Ray group's processes come first for the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.priority import LOWER_BY, RAY_GROUP

REPO = Path(__file__).resolve().parents[2]
CONFTEST = """
from tests import priority


def pytest_configure(config):
    priority.register(config)
"""
TESTS = f"""
import os
import pytest


def record(name):
    with open(os.path.join(os.environ["NICE_OUT"], name), "w") as out:
        out.write(f"{{os.environ['PYTEST_XDIST_WORKER']}} {{os.nice(0)}}")


@pytest.mark.xdist_group({RAY_GROUP!r})
def test_on_ray():
    record("ray")


@pytest.mark.parametrize("n", range(6))
def test_other(n):
    record(f"other-{{n}}")
"""


def test_only_the_ray_groups_worker_keeps_its_priority(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_nice.py").write_text(TESTS)  # the Ray group first, as tests/schedule.py puts it
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup"]
    run = subprocess.run(
        [*command, "--no-loadscope-reorder", "test_nice.py"],
        cwd=tmp_path,
        env={**os.environ, "NICE_OUT": str(tmp_path), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    base = os.nice(0)
    ray_worker, ray_nice = (tmp_path / "ray").read_text().split()
    assert int(ray_nice) == base
    others = [(tmp_path / f"other-{n}").read_text().split() for n in range(6)]
    elsewhere = {int(nice) for worker, nice in others if worker != ray_worker}
    assert elsewhere == {min(base + LOWER_BY, 19)}  # 19: the lowest priority there is
