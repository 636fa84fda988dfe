"""Shared fixtures: tiny model directories, real uvicorn servers on loopback, openai SDK clients.

Servers run in-process (a uvicorn ``Server`` in a background thread, on a
free port of 127.0.0.1) with the tiny random-weight models from
:mod:`pipelines.tiny`, loaded by the real :func:`pipelines.loader.load_backend`.
Requests pass ``FAST`` (two prior and two decoder steps) so each generation
takes a fraction of a second on a CPU.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# OpenMP's default busy-waiting makes each small op a spin contest when other processes hold the cores, as the
# suite's workers do: a test server's two-thread generations burned 5.6x the CPU seconds (12x the wall time)
# without this. It changes how idle threads wait, not a computed bit. Read when torch loads its OpenMP runtime,
# so it is set before the import below; the servers the tests start as processes inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx
import pytest
import torch
import uvicorn
from openai import AsyncOpenAI, OpenAI
from starlette.applications import Starlette

from pipelines.base import BatchResult, ImageJob, Ticket
from server.app.application import create_app
from server.app.runner import uvicorn_options
from server.engine.local import Loader
from server.routes.state import ServerState
from server.settings.config import Settings
from server.settings.model_specs import ModelSpec
from weights.registry import load_registry

from . import lanes, priority, schedule

# The tests' own model calls (tiny models run outside a server) use one thread: over tensors this small,
# threads only contend. Set here, once, for the whole run; a server's engine sets its own count per call.
torch.set_num_threads(1)

FAST = {"prior_steps": 2, "decoder_steps": 2}  # extension fields: keep test generations quick
SLOW = {"prior_steps": 2, "decoder_steps": 200}  # a job that runs for seconds, to be cancelled
TINY = "easel-tiny"
KARLO = "karlo-tiny"
TEST_KEY = "sk-easel-test"
EASEL_MINI = Path(__file__).resolve().parents[1] / "weights" / "easel-mini"  # the shipped model
# A plain httpx.get builds a new TLS context, reading the CA bundle: about 40 ms of CPU, even for http://. Polls
# that ask every 50 ms while a server loads pass this one, built once: the same request for 2 ms.
LOOPBACK_TLS = ssl.create_default_context()
# Where tiny_settings gives each server its own Files/Batches directory; removed, with them, when this process ends.
_DATA_DIRS = tempfile.TemporaryDirectory(prefix="easel-test-data-")


def pytest_configure(config: pytest.Config) -> None:
    priority.register(config)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    lanes.mark_lanes(items)
    lanes.group_shared_fixtures(items)
    schedule.longest_first(items)  # after the groups: a group is handed out whole


@pytest.fixture(autouse=True)
def _fast_lane_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if not request.node.get_closest_marker(lanes.MARKER):
        lanes.guard_unmarked(request.node, monkeypatch)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from pipelines.tiny import build_tiny_kandinsky, build_tiny_karlo

    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "kandinsky": build_tiny_kandinsky(root / "kandinsky"),
        "karlo": build_tiny_karlo(root / "karlo"),
    }


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    app: Starlette

    @property
    def api_url(self) -> str:
        return self.url + "/v1"

    @property
    def state(self) -> ServerState:
        return self.app.state.easel

    def readiness(self) -> dict:
        return httpx.get(self.url + "/health/ready", timeout=10, verify=LOOPBACK_TLS).json()

    def wait_for(self, condition: Callable[[dict], bool], timeout: float = 60.0) -> dict:
        """Poll /health/ready until ``condition(body)`` holds; returns that body."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                body = self.readiness()
            except httpx.TransportError as error:  # a server with second-long deadlines on a saturated machine
                body = {"unanswered": repr(error)}  # may close a poll's connection before reading it: ask again
            if condition(body):
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; last readiness: {body}")
            time.sleep(0.05)

    def model_stats(self, model: str) -> dict:
        return self.readiness()["models"][model]


@contextlib.contextmanager
def running_server(
    settings: Settings, *, loader: Loader | None = None, wait_ready: bool = True
) -> Iterator[LiveServer]:
    """A real uvicorn server for ``settings`` on a free loopback port, stopped on exit."""
    app = create_app(settings, loader=loader)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=5, lifespan="on", **uvicorn_options(settings)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 300  # only ends a hung start: a loaded machine may take minutes to get here
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        live = LiveServer(url=f"http://127.0.0.1:{port}", app=app)
        if wait_ready:
            live.wait_for(lambda body: body.get("status") == "ready", timeout=300)
        yield live
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def easel_mini() -> Iterator[LiveServer]:
    """A server on the shipped easel-mini, for the tests that judge what the real model makes."""
    if not (EASEL_MINI / "model_index.json").is_file():
        pytest.skip("weights/easel-mini is not trained yet")
    spec = ModelSpec(name="easel-mini", family="kandinsky22", path=EASEL_MINI, presets="easel-mini")
    with running_server(Settings(models=(spec,))) as live:
        yield live


class OneJobAtATime:
    """For test backends that wrap a real one with a plain ``run(job, control)``: never batched, each job run by
    ``run``."""

    def batch_key(self, job: ImageJob) -> None:
        return None

    def run_batch(self, tickets: list[Ticket]) -> BatchResult:
        outcomes: list = []
        for ticket in tickets:
            try:
                outcomes.append(self.run(ticket.job, ticket.control))  # type: ignore[attr-defined]
            except Exception as error:
                outcomes.append(error)
        return BatchResult(outcomes)


def tiny_settings(dirs: dict[str, Path], **overrides) -> Settings:
    """The tiny Kandinsky and Karlo models, every registry alias pointing at the tiny Kandinsky."""
    models = (
        ModelSpec(name=TINY, family="kandinsky22", path=dirs["kandinsky"]),
        ModelSpec(name=KARLO, family="karlo", path=dirs["karlo"]),
    )
    aliases = {alias: TINY for alias in load_registry().aliases}
    # Its own Files/Batches directory: servers on the default one (under EASEL_HOME) would refuse each other.
    data_dir = Path(tempfile.mkdtemp(dir=_DATA_DIRS.name))
    values = dict(models=models, aliases=aliases, default_model=TINY, data_dir=data_dir)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def api_server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Its own data directory: the default one ($EASEL_HOME/data) is locked by whichever server uses it first, so
    # the session servers of parallel workers (or of two pytest runs) answered each other's file requests 503.
    settings = tiny_settings(tiny_model_dirs, data_dir=tmp_path_factory.mktemp("api-server-data"))
    with running_server(settings) as live:
        yield live


@pytest.fixture
def client(api_server: LiveServer) -> OpenAI:
    return OpenAI(base_url=api_server.api_url, api_key="any-key-works", max_retries=0)


@pytest.fixture
def async_client(api_server: LiveServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=api_server.api_url, api_key="any-key-works", max_retries=0)


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dirs: dict[str, Path]):
    from pipelines.loader import load_backend

    return load_backend(TINY, "kandinsky22", tiny_model_dirs["kandinsky"])


def assert_envelope(
    response: httpx.Response, status: int, *, param: str | None = None, code: str | None = None
) -> dict:
    """The OpenAI error envelope, exactly, with a request id header; returns the error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("x-request-id")
    body = response.json()
    assert set(body) >= {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error
