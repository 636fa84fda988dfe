"""A local Ray instance for the scale-out tests, kept small: the CI machine has 2 cores.

One Ray instance and one Serve HTTP proxy serve the whole session; each test
module deploys its application on it (:func:`deployed`) and deletes it after.
Ray's CPUs are logical here: enough for two model replicas and a
replacement, whatever the machine has.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray", reason="the scale-out tests need the ray extra: pip install -e '.[ray]'")

from ray import serve  # noqa: E402

from server.engine.base import cpu_cores  # noqa: E402
from server.scaleout.deployments import model_deployment_name  # noqa: E402
from server.scaleout.launch import (  # noqa: E402
    APP_NAME,
    give_proxies_time_to_start,
    running_on_ray,
    start_serve,
    use_easel_proxy_middleware,
)
from server.settings.config import Settings  # noqa: E402
from server.settings.model_specs import ModelSpec  # noqa: E402
from server.settings.ray_serve import RayServeSettings  # noqa: E402
from tests.conftest import LOOPBACK_TLS, TINY  # noqa: E402
from weights.registry import load_registry  # noqa: E402

# What the plain test server's engine runs a lone call on: the cores this process may use (not torch's own
# default, which tests/conftest.py lowers to one).
ENGINE_CORES = cpu_cores()
RAY_CPUS = 3 * ENGINE_CORES  # logical: two model replicas and a replacement for a killed one
OBJECT_STORE_BYTES = 100 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_dir() -> Iterator[Path]:
    """Ray's own temporary folder for this session (short: it holds Unix sockets), with every log."""
    path = Path(tempfile.mkdtemp(prefix="easel-ray-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def serve_port(ray_dir: Path) -> Iterator[int]:
    """A local Ray instance with Serve's HTTP proxy on a free loopback port."""
    use_easel_proxy_middleware()  # before ray.init: the proxy reads it from the environment it inherits
    give_proxies_time_to_start()  # as does Serve's controller: a loaded machine starts its proxy slowly
    ray.init(
        _temp_dir=str(ray_dir),
        num_cpus=RAY_CPUS,
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        log_to_driver=False,
        configure_logging=False,
    )
    port = _free_port()
    start_serve("127.0.0.1", port)
    try:
        yield port
    finally:
        serve.shutdown()
        ray.shutdown()


@dataclass
class RayApp:
    url: str
    settings: Settings

    @property
    def api_url(self) -> str:
        return self.url + "/v1"

    def readiness(self) -> dict:
        return httpx.get(self.url + "/health/ready", timeout=10, verify=LOOPBACK_TLS).json()

    def replica_states(self, model: str = TINY) -> dict[str, int]:
        """Serve's count of the model's replicas per state (RUNNING, STARTING, STOPPING...)."""
        status = serve.status().applications[APP_NAME].deployments[model_deployment_name(model)]
        return {str(state): count for state, count in status.replica_states.items()}

    def replica_stats(self, model: str = TINY, replicas: int = 2, timeout: float = 60) -> dict[str, dict]:
        """Each replica's own figures, by replica id. Serve routes each call to a replica of its choice,
        so ask until ``replicas`` different ones have answered."""
        handle = serve.get_deployment_handle(model_deployment_name(model), app_name=APP_NAME)
        seen: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        while len(seen) < replicas:
            assert time.monotonic() < deadline, f"only {sorted(seen)} answered"
            stats = handle.stats.remote().result(timeout_s=30)
            seen[stats["replica"]] = stats
        return seen


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


@contextlib.contextmanager
def deployed(
    port: int,
    model_dir: Path,
    image_dir: Path,
    scaling: RayServeSettings,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    more_models: tuple[ModelSpec, ...] = (),
    **settings_fields: Any,
) -> Iterator[RayApp]:
    """The tiny Kandinsky model (and ``more_models``) on the session's Ray instance, each loaded or failed."""
    settings = Settings(
        models=(ModelSpec(name=TINY, family="kandinsky22", path=model_dir), *more_models),
        aliases={alias: TINY for alias in load_registry().aliases},  # as the plain test servers have
        port=port,
        image_dir=image_dir,
        **scaling.as_options(),
        **settings_fields,
    )
    with running_on_ray(settings, overrides) as url:
        app = RayApp(url, settings)
        settled = lambda: all(m["status"] != "loading" for m in app.readiness()["models"].values())  # noqa: E731
        wait_until(settled, 120, "every model to load or fail")
        yield app
