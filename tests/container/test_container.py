"""Easel's image, built from the Dockerfile and run with podman, as a user would run it.

The base image is made here (a debootstrap'd minimal Debian; these machines
have no registry), the cpu target is built on it with torch from the host's
pip configuration, and the container is driven from outside: readiness, a
generation through the openai SDK, the user it runs as, its health check, a
volume that outlives it, and how it stops. Slow (a real build), so it carries
the ``container`` marker; it skips where podman cannot work.
"""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from .conftest import PREFIX
from .podman import base_image, build_command, machine_lock, podman, run_command, why_not_runnable

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(why_not_runnable() is not None, reason=why_not_runnable() or ""),
]

READY_TIMEOUT = 600.0  # seconds: a loaded machine may take long to import torch; the wait ends as soon as it is ready
STOP_TIMEOUT = 60  # podman stop's grace before SIGKILL: far above the image's EASEL_SHUTDOWN_TIMEOUT
IMAGE_SIZE_TARGET = 2.5e9  # bytes, the CPU image with torch
EASEL_UID = 10001


@dataclass
class Running:
    name: str
    url: str
    started: float  # time.monotonic() just before `podman run`


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Built:
    tag: str
    seconds: float  # the build's, the base image made


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    tag = f"localhost/easel-test:{uuid.uuid4().hex[:12]}"
    with machine_lock("container-build"):
        base = base_image()
        started = time.monotonic()
        podman(*build_command(tag, base), timeout=3600)
        seconds = time.monotonic() - started
    try:
        yield Built(tag, seconds)
    finally:
        podman("rmi", "--force", tag, check=False)


@pytest.fixture
def image(built: Built) -> str:
    return built.tag


@pytest.fixture
def figure(record_property: Callable[[str, object], None]) -> Callable[[str, str], None]:
    """Records a figure for the summary (conftest.py)."""
    return lambda name, value: record_property(PREFIX + name, value)


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"easel-test-{uuid.uuid4().hex[:12]}"
    podman("volume", "create", name)
    try:
        yield name
    finally:
        podman("volume", "rm", "--force", name, check=False)


@contextlib.contextmanager
def container(image: str, volume: str, network: str = "host") -> Iterator[Running]:
    name = f"easel-test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    running = Running(name, f"http://127.0.0.1:{port}", time.monotonic())
    podman(*run_command(name, image, volume, port, network))
    try:
        yield running
    finally:
        podman("rm", "--force", name, check=False, timeout=180)


def state(running: Running, field: str) -> str:
    return podman("inspect", "--format", "{{.State." + field + "}}", running.name).stdout.strip()


def wait_until(running: Running, is_ready: Callable[[], bool], what: str) -> float:
    """Poll ``is_ready()`` until it holds; fail at once, with the log, if the container exits.

    Returns the seconds since ``podman run``.
    """
    started = time.monotonic()
    while not is_ready():
        if state(running, "Running") != "true":
            done = podman("logs", running.name, check=False)
            logs = (done.stdout + done.stderr)[-4000:]
            pytest.fail(f"the container exited ({state(running, 'ExitCode')}) before {what}:\n{logs}")
        assert time.monotonic() - started < READY_TIMEOUT, f"not {what} after {READY_TIMEOUT:.0f} s"
        time.sleep(1)
    return time.monotonic() - running.started


def answers_ready(running: Running) -> bool:
    try:
        return httpx.get(running.url + "/health/ready", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def healthy(running: Running) -> bool:
    """The image's own HEALTHCHECK, run inside the container."""
    return podman("healthcheck", "run", running.name, check=False, timeout=60).returncode == 0


def stop(running: Running) -> tuple[str, float]:
    """``podman stop``: SIGTERM, SIGKILL after STOP_TIMEOUT; the exit code and seconds it took."""
    started = time.monotonic()
    podman("stop", "--time", str(STOP_TIMEOUT), running.name, timeout=STOP_TIMEOUT + 60)
    return state(running, "ExitCode"), time.monotonic() - started


def test_the_image_serves_easel_mini_as_a_non_root_user_and_stops_with_exit_0(image: str, volume: str, figure):
    with container(image, volume) as running:
        figure("seconds from run to ready", f"{wait_until(running, lambda: answers_ready(running), 'ready'):.1f}")
        assert healthy(running)

        client = OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        result = client.images.generate(
            model="easel-mini",
            prompt="a small yellow star in the top left corner",
            size="256x256",
            response_format="b64_json",
            extra_body={"prior_steps": 2, "decoder_steps": 2},
        )
        assert len(result.data) == 1 and result.data[0].b64_json
        picture = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
        assert (picture.format, picture.size) == ("PNG", (256, 256))

        # The server itself (PID 1: easel is the entrypoint) runs as the image's user, not root.
        status = podman("exec", running.name, "cat", "/proc/1/status").stdout
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert uids == [str(EASEL_UID)] * 4
        assert podman("exec", running.name, "id", "-un").stdout.strip() == "easel"

        exit_code, seconds = stop(running)
        figure("exit code of stop", f"{exit_code} (after {seconds:.1f} s)")
        assert exit_code == "0"  # 137 would be podman's SIGKILL after STOP_TIMEOUT; 143 an ungraceful SIGTERM


def test_easel_home_outlives_the_container_and_easel_mini_needs_no_network(image: str, volume: str):
    # No network at all: readiness, seen by the image's health check from inside, proves nothing is fetched.
    with container(image, volume, network="none") as offline:
        wait_until(offline, lambda: healthy(offline), "healthy without a network")
        # Written by the container's user, to the volume: a settings file the next container must read.
        settings = 'api_keys = ["sk-container-test"]\n'
        podman("exec", offline.name, "sh", "-c", f"printf '{settings}' > /data/easel.toml")
        assert stop(offline)[0] == "0"

    with container(image, volume) as running:
        wait_until(running, lambda: answers_ready(running), "ready")
        assert podman("exec", running.name, "cat", "/data/easel.toml").stdout == settings
        models = running.url + "/v1/models"
        assert httpx.get(models, timeout=30).status_code == 401
        keyed = httpx.get(models, headers={"Authorization": "Bearer sk-container-test"}, timeout=30)
        assert keyed.status_code == 200
        assert "easel-mini" in [model["id"] for model in keyed.json()["data"]]


def test_the_cpu_image_is_within_its_size_target(built: Built, figure):
    size = int(podman("image", "inspect", "--format", "{{.Size}}", built.tag).stdout.strip())
    figure("build seconds (base image made)", f"{built.seconds:.0f}")
    figure("image size", f"{size / 1e9:.2f} GB ({size} bytes)")
    assert size <= IMAGE_SIZE_TARGET
