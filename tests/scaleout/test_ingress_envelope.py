"""An ingress replica killed while it holds a request: Serve's proxy answers nothing, Easel's middleware the envelope.

Without it the client got uvicorn's plain-text 500, with no envelope and no ``x-request-id``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import ray

from server.scaleout.deployments import INGRESS_NAME
from server.scaleout.launch import APP_NAME
from server.settings.ray_serve import RayServeSettings
from tests.conftest import SLOW, TINY

from .conftest import RayApp, deployed, wait_until


@pytest.fixture(scope="module")
def one_ingress(serve_port: int, tiny_model_dirs: dict[str, Path], tmp_path_factory) -> Iterator[RayApp]:
    image_dir = tmp_path_factory.mktemp("ray-images")
    with deployed(serve_port, tiny_model_dirs["kandinsky"], image_dir, RayServeSettings()) as app:
        yield app


def ingress_actor_names() -> list[str]:
    prefix = f"SERVE_REPLICA::{APP_NAME}#{INGRESS_NAME}#"
    return [
        actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True) if actor["name"].startswith(prefix)
    ]


def test_a_killed_ingress_replica_answers_the_envelope_with_the_request_id(one_ingress: RayApp) -> None:
    answers: list[httpx.Response] = []
    body = {"prompt": "a red circle", "size": "64x64", "response_format": "b64_json", **SLOW}
    headers = {"x-request-id": "req-ingress-killed"}

    def post() -> None:
        answers.append(httpx.post(one_ingress.api_url + "/images/generations", json=body, headers=headers, timeout=120))

    client = threading.Thread(target=post)
    client.start()
    wait_until(lambda: one_ingress.readiness()["models"][TINY]["running"] == 1, 60, "the job to run")
    (victim,) = ingress_actor_names()
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    client.join(120)
    (answer,) = answers
    assert answer.status_code == 500, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"] == "req-ingress-killed"
    assert answer.json() == {
        "error": {
            "message": "The server had an error while processing your request. "
            "Quote request id req-ingress-killed when reporting it.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }

    def replaced() -> bool:
        names = ingress_actor_names()
        return len(names) == 1 and victim not in names

    def healthy() -> bool:
        try:
            return httpx.get(one_ingress.url + "/health", timeout=10).status_code == 200
        except httpx.HTTPError:  # the proxy may still hold a request for the dead replica a while
            return False

    wait_until(replaced, 120, "a replacement ingress replica")
    wait_until(healthy, 180, "/health again")
