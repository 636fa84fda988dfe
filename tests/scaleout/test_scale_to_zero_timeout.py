"""A request for a model at zero replicas waits for Serve's start no longer than ``--load-timeout-seconds``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.settings.ray_serve import RayServeSettings
from tests.conftest import FAST, TINY, assert_envelope

from .conftest import RayApp, deployed, wait_until

# Far shorter than a replica's start, which imports torch and diffusers: seconds even on an idle machine.
LOAD_TIMEOUT_SECONDS = 0.5


@pytest.fixture(scope="module")
def impatient(serve_port: int, tiny_model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[RayApp]:
    scaling = RayServeSettings(min_replicas=0, max_replicas=1)
    image_dir = tmp_path_factory.mktemp("ray-images")
    with deployed(
        serve_port, tiny_model_dirs["kandinsky"], image_dir, scaling, load_timeout_seconds=LOAD_TIMEOUT_SECONDS
    ) as app:
        yield app


def model(app: RayApp) -> dict:
    return httpx.get(f"{app.api_url}/models/{TINY}", timeout=10).json()


def test_a_request_past_the_load_timeout_gets_model_loading_and_the_start_goes_on(impatient: RayApp) -> None:
    body = {"prompt": "a red circle", "size": "64x64", "response_format": "b64_json", **FAST}
    response = httpx.post(impatient.api_url + "/images/generations", json=body, timeout=60)
    error = assert_envelope(response, 503, code="model_loading")
    assert (
        error["message"] == f"Model '{TINY}' did not finish loading within {LOAD_TIMEOUT_SECONDS:g} s; retry shortly."
    )
    assert response.headers["retry-after"] == "5"
    # The replica it asked for starts all the same, and a later request finds it.
    wait_until(lambda: model(impatient)["status"] == "ready", 300, "the replica's start")
    response = httpx.post(impatient.api_url + "/images/generations", json=body, timeout=60)
    assert response.status_code == 200 and len(response.json()["data"]) == 1
