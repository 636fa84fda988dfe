"""``easel pull``'s load check failing: one line that says how to retry or skip it, and no partial folder left.

The check runs in its own process (``python -m cli.check``). Here the test
kills that process the way the kernel's out-of-memory killer would, once it
has started, and the pull against the fake hub must say so in one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import REPO, clean_env
from .fakehub import FakeHub
from .test_pull import hub, hub_repos  # noqa: F401  (fixtures)


def _children_running(parent: int, module: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" in status and module.encode() in command:
            found.append(int(entry.name))
    return found


def test_a_killed_load_check_says_how_to_retry_or_skip_and_leaves_no_partial_folder(hub: FakeHub, tmp_path: Path):  # noqa: F811
    home = tmp_path / "home"
    env = clean_env(home, HF_ENDPOINT=hub.url)
    pull = subprocess.Popen(
        [sys.executable, "-m", "cli", "pull", "kandinsky-2-2"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not (checks := _children_running(pull.pid, "cli.check")):
        assert pull.poll() is None, pull.stderr.read() if pull.stderr else ""
        assert time.monotonic() < deadline, "the load check never started"
        time.sleep(0.02)
    os.kill(checks[0], signal.SIGKILL)
    _, stderr = pull.communicate(timeout=120)
    assert pull.returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert last == (
        "easel pull: error: the load check was killed by SIGKILL (out of memory?); "
        "run the same command again to retry it, or add --no-check to skip it"
    )
    assert "Traceback" not in stderr
    assert not list((home / "models").glob(".*.partial"))
    assert not (home / "registry.json").exists()
    assert list((home / "downloads").iterdir()), "the downloads are kept for the retry"
