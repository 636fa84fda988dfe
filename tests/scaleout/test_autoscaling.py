"""A model that autoscales from one replica to two under load, and back when the load stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from server.settings.model_specs import ModelSpec
from server.settings.ray_serve import RayServeSettings
from tests.api.test_metrics import samples, value
from tests.conftest import FAST, TINY, assert_envelope

from .conftest import RayApp, deployed, wait_until

# Serve's defaults wait 30 s before scaling up and 600 s before scaling down; a test cannot.
QUICK_DECISIONS = {
    TINY: {
        "autoscaling_config": {
            "upscale_delay_s": 1.0,
            "downscale_delay_s": 3.0,
            "metrics_interval_s": 0.5,
            "look_back_period_s": 2.0,
        }
    }
}


BROKEN = "broken"  # a model whose folder is missing: it fails to load on its replica


@pytest.fixture(scope="module")
def autoscaled(serve_port: int, tiny_model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[RayApp]:
    scaling = RayServeSettings(min_replicas=1, max_replicas=2, target_ongoing_requests=1, max_ongoing_requests=2)
    image_dir = tmp_path_factory.mktemp("ray-images")
    broken = ModelSpec(name=BROKEN, family="kandinsky22", path=image_dir / "no-such-model")
    overrides = {**QUICK_DECISIONS, BROKEN: {"autoscaling_config": {"max_replicas": 1}}}
    with deployed(serve_port, tiny_model_dirs["kandinsky"], image_dir, scaling, overrides, (broken,)) as app:
        yield app


def test_a_model_that_fails_to_load_on_its_replica_is_reported_as_plain_serving_does(autoscaled: RayApp) -> None:
    missing = autoscaled.settings.models[1].path
    model = httpx.get(f"{autoscaled.api_url}/models/{BROKEN}", timeout=10).json()
    assert model["status"] == "failed" and f"no directory {missing}" in model["error"]
    response = httpx.post(autoscaled.api_url + "/images/generations", json={"prompt": "x", "model": BROKEN})
    error = assert_envelope(response, 503, code="model_unavailable")
    assert error["message"] == f"Model '{BROKEN}' failed to load: {model['error']}"
    assert response.headers["x-should-retry"] == "false"


def test_metrics_count_what_the_replica_measured_inside_its_pipeline_calls(autoscaled: RayApp) -> None:
    """As plain serving's /metrics (tests/api/test_metrics.py), with the pipeline measured on the model replica."""
    before = samples(autoscaled)
    client = OpenAI(base_url=autoscaled.api_url, api_key="any", max_retries=0)
    for n in (1, 2):  # one after the other: each job is a pipeline call of its own
        client.images.generate(prompt="a cyan ring", size="64x64", n=n, extra_body={"seed": 3, **FAST})
    after = samples(autoscaled)

    def added(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert added("easel_images_generated_total", model=TINY) == 3
    assert added("easel_queue_wait_seconds_count", model=TINY) == 2
    assert (added("easel_batch_images_count", model=TINY), added("easel_batch_images_sum", model=TINY)) == (2, 3)
    for stage in ("text_encoder", "prior", "decoder", "image_decode"):
        assert added("easel_stage_seconds_count", model=TINY, stage=stage) == 2, stage
        assert added("easel_stage_seconds_sum", model=TINY, stage=stage) > 0, stage
    assert added("easel_worker_busy_seconds_total", device="cpu") > 0


def test_a_model_scales_from_one_replica_to_two_under_load_and_back(autoscaled: RayApp) -> None:
    assert autoscaled.replica_states() == {"RUNNING": 1}
    stop = threading.Event()
    served: list[int] = []
    failures: list[BaseException] = []

    def keep_asking(number: int) -> None:
        client = OpenAI(base_url=autoscaled.api_url, api_key="any", max_retries=3)
        try:
            while not stop.is_set():
                extra = {"seed": number, "prior_steps": 2, "decoder_steps": 10}
                client.images.generate(prompt="a cyan ring", size="64x64", response_format="b64_json", extra_body=extra)
                served.append(number)
        except BaseException as error:  # reported below
            failures.append(error)

    clients = [threading.Thread(target=keep_asking, args=(number,)) for number in range(4)]
    for thread in clients:
        thread.start()
    try:  # generous bounds: a replica starts in seconds on an idle machine, minutes on a busy one
        wait_until(lambda: autoscaled.replica_states().get("RUNNING") == 2, 600, "a second replica")
        # Both replicas take work once the second is up.
        wait_until(lambda: all(s["completed"] for s in autoscaled.replica_stats().values()), 300, "work on both")
    finally:
        stop.set()
        for thread in clients:
            thread.join(60)
    assert failures == []
    assert served
    wait_until(lambda: autoscaled.replica_states() == {"RUNNING": 1}, 300, "the scale-down to one replica")
