"""A model at zero replicas (``min_replicas: 0``): its first requests start one and wait for it, Serve takes it
back to zero when idle, and ``/v1/models`` and ``/metrics`` follow Serve's state."""

from __future__ import annotations

import base64
import io
import itertools
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from PIL import Image

from server.settings.ray_serve import RayServeSettings
from tests.api.test_metrics import samples, value
from tests.conftest import FAST, TINY, LiveServer, assert_envelope

from .conftest import ENGINE_CORES, RayApp, deployed, wait_until

# Serve waits 600 s before it scales a model down (--downscale-delay-seconds), and looks at its load over
# the last 30 s; a test cannot. Starting from zero has no delay in Serve.
LOOK_BRIEFLY = {TINY: {"autoscaling_config": {"metrics_interval_s": 0.5, "look_back_period_s": 1.0}}}
CLIENTS = 4


@pytest.fixture(scope="module")
def at_zero(serve_port: int, tiny_model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[RayApp]:
    # Up to two replicas, but four jobs per replica are the target: the four clients need only the one started.
    # As many cores per replica as the plain test server's engine: the same bytes. Serve sees no request between
    # the replica's answer to the ingress's load and the clients' jobs reaching it; on a busy machine that gap
    # outlasted a 2 s delay, and Serve took the new replica back to zero before the jobs came.
    scaling = RayServeSettings(
        min_replicas=0, max_replicas=2, target_ongoing_requests=4, replica_cpus=ENGINE_CORES, downscale_delay_seconds=10
    )
    image_dir = tmp_path_factory.mktemp("ray-images")
    with deployed(serve_port, tiny_model_dirs["kandinsky"], image_dir, scaling, LOOK_BRIEFLY) as app:
        yield app


def model_object(app: RayApp) -> dict:
    return httpx.get(f"{app.api_url}/models/{TINY}", timeout=10).json()


def generate(seed: int, server: RayApp | LiveServer) -> str | None:
    client = OpenAI(base_url=server.api_url, api_key="any", max_retries=0)
    answer = client.images.generate(
        prompt="a red circle", size="64x64", response_format="b64_json", extra_body={"seed": seed, **FAST}
    )
    return answer.data[0].b64_json


def added(after: dict, before: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_a_model_at_zero_starts_on_demand_once_for_concurrent_requests_and_returns_to_zero(
    at_zero: RayApp, api_server: LiveServer
) -> None:
    # At start: no replica, nothing for readiness to wait for (no model keeps a replica).
    assert at_zero.replica_states().get("RUNNING", 0) == 0
    readiness = httpx.get(at_zero.url + "/health/ready", timeout=10)
    assert readiness.status_code == 200 and readiness.json()["models"][TINY]["status"] == "unloaded"
    start = model_object(at_zero)
    assert start["status"] == "unloaded" and start["capabilities"] is None
    # Not "stopping": in a full run of this folder, Serve was once still stopping a replica at this point.
    assert {state: count for state, count in start["replicas"].items() if state != "stopping"} == {
        "running": 0,
        "starting": 0,
        "min": 0,
        "max": 2,
    }
    before = samples(at_zero)

    seen: list[dict] = []  # the model object, while the clients wait, until the replica counts show it running
    done = threading.Event()

    def watch() -> None:
        deadline = None
        while not done.is_set() or not seen[-1]["replicas"]["running"]:
            seen.append(model_object(at_zero))
            deadline = deadline or (time.monotonic() + 60 if done.is_set() else None)
            if deadline is not None and time.monotonic() > deadline:
                return  # the assertions below say what was missing
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            images = list(pool.map(generate, range(CLIENTS), [at_zero] * CLIENTS))
    finally:
        done.set()
        watcher.join()

    # Each client waited for the one replica start they shared and got its image (the replica may batch them,
    # which moves a pixel's last bits: docs/serving.md, "Reproducibility").
    assert all(Image.open(io.BytesIO(base64.b64decode(image or ""))).size == (64, 64) for image in images)
    assert len(set(images)) == CLIENTS
    statuses = [status for status, _ in itertools.groupby(model["status"] for model in seen)]
    assert [status for status in statuses if status != "unloaded"] == ["loading", "ready"], statuses
    # The replica counts are Serve's as of the ingress's last look (once a second).
    assert seen[-1]["status"] == "ready" and seen[-1]["capabilities"] is not None
    assert seen[-1]["replicas"] == {"running": 1, "starting": 0, "stopping": 0, "min": 0, "max": 2}
    started = samples(at_zero)
    assert added(started, before, "easel_model_loads_total", model=TINY, source="replica") == 1
    assert added(started, before, "easel_model_load_seconds_count", model=TINY, source="replica") == 1
    assert added(started, before, "easel_model_load_seconds_sum", model=TINY, source="replica") > 0
    assert added(started, before, "easel_requests_waited_for_load_total", model=TINY) == CLIENTS

    # Idle past the downscale delay: Serve stops the replica, and the model is unloaded again.
    wait_until(lambda: model_object(at_zero)["status"] == "unloaded", 300, "the scale-down to zero")
    assert at_zero.replica_states().get("RUNNING", 0) == 0
    down = samples(at_zero)
    assert added(down, before, "easel_model_evictions_total", model=TINY, reason="replica_stopped") == 1
    assert value(down, "easel_model_replicas", model=TINY, state="running") == 0
    assert value(down, "easel_model_state", model=TINY, state="unloaded") == 1
    assert model_object(at_zero)["capabilities"] is not None  # what it can do is still known

    # A lone request at zero starts a replica again and gets the bytes plain serving gives.
    assert generate(11, at_zero) == generate(11, api_server)
    # Counted when the ingress next reads Serve's state (once a second), which may come after the answer.
    wait_until(
        lambda: added(samples(at_zero), before, "easel_model_loads_total", model=TINY, source="replica") == 2,
        30,
        "the second replica start counted",
    )
    # Serve alone stops replicas: the operators' unload says so at once.
    refused = httpx.post(f"{at_zero.api_url}/models/{TINY}/unload", timeout=10)
    assert "autoscaler" in assert_envelope(refused, 409, code="model_autoscaled")["message"]
