"""Host names the server answers (DNS rebinding on an open local server) and its file-descriptor budget.

Bound to loopback, the server answers only the loopback names unless told
otherwise; a foreign ``Host`` is 421 in the envelope. ``--max-connections``
needs a descriptor each: the soft limit is raised to fit, up to the hard limit,
or the start is refused in one line. Failed accepts are logged once a second.
"""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server.http.hosts import LOOPBACK_NAMES, answered_hosts, host_name
from server.observe.logs import OncePerInterval
from server.settings.config import Settings
from weights.spec import ModelSpec

from ..cli.conftest import REPO, clean_env, free_port
from ..conftest import LOOPBACK_TLS, TINY, assert_envelope, running_server


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:8000", "127.0.0.1"), ("LocalHost", "localhost"), ("[::1]:80", "::1"), ("::1", "::1"), ("a.b", "a.b")],
)
def test_host_names_are_compared_without_the_port(header: str, name: str):
    assert host_name(header) == name


def test_which_hosts_are_answered_by_default_and_when_told():
    assert answered_hosts((), "127.0.0.1", None) == LOOPBACK_NAMES
    assert answered_hosts((), "localhost", None) == LOOPBACK_NAMES
    assert answered_hosts((), "0.0.0.0", None) is None  # reached by whatever name the network gives it
    assert answered_hosts((), "127.0.0.1", "https://images.example") is None
    assert answered_hosts(("Images.Example", "localhost"), "127.0.0.1", None) == {"images.example", "localhost"}
    assert answered_hosts(("*",), "127.0.0.1", None) is None


def settings_for(tiny_model_dirs: dict[str, Path], **options) -> Settings:
    spec = ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"])
    return Settings(models=(spec,), default_model=TINY, **options)


def test_a_foreign_host_is_421_and_urls_carry_an_answered_host(tiny_model_dirs: dict[str, Path]):
    with running_server(settings_for(tiny_model_dirs, allowed_hosts=("images.example", "127.0.0.1"))) as live:
        body = {"prompt": "a red circle", "size": "64x64", "prior_steps": 2, "decoder_steps": 2}
        refused = httpx.post(
            live.url + "/v1/images/generations", json=body, headers={"host": "localhost:8000"}, timeout=60
        )
        error = assert_envelope(refused, 421, code="misdirected_request")
        assert error["message"] == (
            "This server does not answer for the host 'localhost:8000'. "
            "Use one of: 127.0.0.1, images.example (the server's --allowed-hosts)."
        )
        answered = httpx.post(
            live.url + "/v1/images/generations", json=body, headers={"host": "images.example"}, timeout=60
        )
        assert answered.status_code == 200
        assert answered.json()["data"][0]["url"].startswith("http://images.example/v1/files/images/")


def test_loopback_names_are_answered_by_default(tiny_model_dirs: dict[str, Path]):
    with running_server(settings_for(tiny_model_dirs)) as live:
        port = live.url.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            assert httpx.get(live.url + "/health", headers={"host": host}, timeout=10).status_code == 200
        assert_envelope(httpx.get(live.url + "/health", headers={"host": "attacker.example"}, timeout=10), 421)


def limited(soft: int, hard: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_max_connections_past_the_hard_descriptor_limit_is_refused_in_one_line(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--port", str(free_port()), "--max-connections", "1000"],
        cwd=REPO,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        preexec_fn=limited(300, 300),
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "easel: error: --max-connections: 1000 connections need about 1064 open files, but this process may open "
        "at most 300 (ulimit -n); lower it to 236 or raise the limit\n"
    )


def test_the_soft_descriptor_limit_is_raised_to_fit_the_connections(tmp_path: Path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port), "--max-connections", "1000"],
        cwd=REPO,
        env=clean_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=limited(300, 4096),
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, "the server stopped"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5, verify=LOOPBACK_TLS).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert line.split()[3:5] == ["1064", "4096"]
    finally:
        process.terminate()
        process.wait(timeout=120)


def test_failed_accepts_are_logged_once_a_second_without_a_traceback():
    gate = OncePerInterval("socket.accept() out of system resource", seconds=1.0)

    def record(message: str) -> logging.LogRecord:
        made = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, message, None, None)
        made.exc_info = (OSError, OSError(24, "Too many open files"), None)
        return made

    flood = [record("socket.accept() out of system resource\nsocket: <x>") for _ in range(1000)]
    passed = [r for r in flood if gate.filter(r)]
    assert len(passed) == 1 and passed[0].exc_info is None
    assert gate.filter(record("something else"))  # other messages are not touched
    gate.last -= 1.0  # a second later
    later = record("socket.accept() out of system resource")
    assert gate.filter(later)
    assert later.getMessage().endswith("(999 more like it in the last seconds were not logged)")
