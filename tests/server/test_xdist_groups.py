"""scripts/test.sh's `--dist loadgroup` really keeps a group on one worker with the pytest and xdist installed.

tests/lanes.py groups tests that share a heavy server, a Ray instance or a trained model. pytest 9.2 reads a
test's id from a field xdist 3.8 does not rewrite, so groups were silently ignored there; this runs a real
two-worker session to catch any such pairing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GROUPED = """
import os
import pytest


@pytest.mark.xdist_group("shared")
@pytest.mark.parametrize("n", range(4))
def test_grouped(n):
    with open(os.path.join(os.environ["GROUP_OUT"], f"worker-{n}"), "w") as out:
        out.write(os.environ.get("PYTEST_XDIST_WORKER", "none"))
"""


def test_a_group_runs_on_one_worker(tmp_path: Path):
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup"]
    command.append("--no-loadscope-reorder")  # as scripts/test.sh runs the suite
    run = subprocess.run(
        [*command, "test_grouped.py"],
        cwd=tmp_path,
        env={**os.environ, "GROUP_OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    workers = {(tmp_path / f"worker-{n}").read_text() for n in range(4)}
    assert len(workers) == 1 and workers != {"none"}, workers
