"""Running the ``easel`` command as a person would: a separate process, its own environment, its exit status.

The pytest process has imported model code, which set ``HF_HUB_OFFLINE=1``
in its environment; a child gets a clean copy without it (and with its own
``EASEL_HOME``), as a shell would give it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import LOOPBACK_TLS

REPO = Path(__file__).resolve().parents[2]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EASEL_", "HF_", "TRANSFORMERS_"))}
    env.update(EASEL_HOME=str(home), HF_HOME=str(home / "hf"), HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


def easel(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def ctrl_c_works() -> None:
    """``preexec_fn`` for a child that the test interrupts with SIGINT, as Ctrl-C does.

    A suite started in the background (``nohup``, ``cmd &`` in a script, some CI runners) runs with SIGINT
    ignored, and its children inherit that: Python then installs no KeyboardInterrupt handler, and the test's
    Ctrl-C would do nothing. A terminal's Ctrl-C reaches a foreground command with the default action."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(*args: str, env: dict[str, str], ready_timeout: float = 180) -> Iterator[str]:
    """``easel serve ARGS`` in a child process, until every model is ready; yields its base URL."""
    port = free_port()
    # A file, not a pipe: nobody reads the log while the server runs, and a full pipe would block it.
    with tempfile.TemporaryFile("w+") as log:
        command = [sys.executable, "-m", "cli", "serve", "--port", str(port), *args]
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            yield _wait_ready(process, f"http://127.0.0.1:{port}", log, ready_timeout)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(process: subprocess.Popen, url: str, log, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            pytest.fail(f"easel serve exited {process.returncode}: {log.read()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health/ready", timeout=5, verify=LOOPBACK_TLS).status_code == 200:
                return url
        if time.monotonic() > deadline:
            pytest.fail("easel serve did not get ready")
        time.sleep(0.3)
