"""Server-side failures: a backend that raises (500), a model still loading (503), one that failed to load.

The server here loads three models in order: ``broken`` (the tiny Kandinsky,
wrapped so that every run raises), ``missing`` (a directory that does not
exist) and ``gated`` (the tiny Kandinsky, whose loading waits for the test).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from pipelines.base import ImageJob, JobControl
from server.settings.config import Settings
from server.settings.model_specs import ModelSpec

from ..conftest import FAST, SLOW, LiveServer, OneJobAtATime, assert_envelope, running_server

SECRET = "/very/secret/internal/path.py"


class RaisingBackend(OneJobAtATime):
    """The real tiny backend, except that generating fails the way a bug would."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.info = inner.info

    def run(self, job: ImageJob, control: JobControl):
        raise RuntimeError(f"exploded in {SECRET}")

    def count_tokens(self, prompt: str) -> int:
        return self.inner.count_tokens(prompt)


@pytest.fixture(scope="module")
def gate() -> threading.Event:
    return threading.Event()


@pytest.fixture(scope="module")
def odd_server(tiny_model_dirs: dict[str, Path], tmp_path_factory, gate: threading.Event):
    from pipelines.loader import load_backend

    def loader(name, family, path, **kwargs):
        if name == "gated":
            gate.wait()
        backend = load_backend(name, family, path, **kwargs)
        return RaisingBackend(backend) if name == "broken" else backend

    kandinsky = tiny_model_dirs["kandinsky"]
    settings = Settings(
        models=(
            ModelSpec(name="broken", family="kandinsky22", path=kandinsky),
            ModelSpec(name="missing", family="kandinsky22", path=tmp_path_factory.mktemp("empty") / "nothing-here"),
            ModelSpec(name="gated", family="kandinsky22", path=kandinsky),
        ),
        aliases={"dall-e-3": "gated"},
    )
    with running_server(settings, loader=loader, wait_ready=False) as live:
        live.wait_for(
            lambda body: (
                body["models"]["broken"]["status"] == "ready" and body["models"]["missing"]["status"] == "failed"
            )
        )
        yield live
        gate.set()  # let the loading thread finish if the loading test did not run


def post(server: LiveServer, model: str) -> httpx.Response:
    return httpx.post(server.api_url + "/images/generations", json={"prompt": "x", "model": model, **FAST}, timeout=60)


def test_loading_model_is_503_with_retry_after_until_loaded(odd_server: LiveServer, gate: threading.Event):
    assert httpx.get(odd_server.url + "/health").json() == {"status": "ok"}
    response = post(odd_server, "gated")
    error = assert_envelope(response, 503, code="model_loading")
    assert error["type"] == "server_error"
    assert int(response.headers["retry-after"]) >= 1
    assert_envelope(post(odd_server, "dall-e-3"), 503, code="model_loading")  # via an alias too
    ready = httpx.get(odd_server.url + "/health/ready")
    assert_envelope(ready, 503, code="not_ready")
    assert ready.json()["models"]["gated"] == {"status": "loading"}
    listed = {model["id"]: model for model in httpx.get(odd_server.api_url + "/models").json()["data"]}
    assert listed["gated"]["status"] == "loading" and listed["gated"]["capabilities"] is None

    gate.set()
    odd_server.wait_for(lambda body: body["models"]["gated"]["status"] == "ready")
    response = post(odd_server, "gated")
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["url"]


def test_model_that_failed_to_load_is_503_with_the_loader_message(odd_server: LiveServer):
    report = httpx.get(odd_server.url + "/health/ready").json()["models"]["missing"]
    assert report["status"] == "failed"
    assert "nothing-here" in report["error"]  # the loader's how-to-get-it message
    response = post(odd_server, "missing")
    error = assert_envelope(response, 503, code="model_unavailable")
    assert report["error"] in error["message"]
    assert response.headers["x-should-retry"] == "false" and "retry-after" not in response.headers
    client = openai.OpenAI(base_url=odd_server.api_url, api_key="k", max_retries=2)  # not retried
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="x", model="missing")
    assert caught.value.status_code == 503


def test_backend_exception_is_500_without_internals(odd_server: LiveServer, caplog):
    caplog.set_level(logging.ERROR, logger="easel.dispatch")
    response = post(odd_server, "broken")
    error = assert_envelope(response, 500)
    assert error["type"] == "server_error"
    request_id = response.headers["x-request-id"]
    assert request_id in error["message"]
    assert SECRET not in response.text and "Traceback" not in response.text and "RuntimeError" not in response.text
    logged = [record for record in caplog.records if request_id in record.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback stays server-side
    assert SECRET in str(logged[0].exc_info[1])

    client = openai.OpenAI(base_url=odd_server.api_url, api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(prompt="x", model="broken", extra_body=FAST)
    assert caught.value.status_code == 500 and caught.value.type == "server_error"
    stats = httpx.get(odd_server.url + "/health/ready").json()["models"]["broken"]
    assert stats["failed"] == 2 and stats["completed"] == 0


def test_requests_the_stopping_engine_drops_are_503_shutting_down(tiny_model_dirs: dict[str, Path]):
    settings = Settings(models=(ModelSpec(name="tiny", family="kandinsky22", path=tiny_model_dirs["kandinsky"]),))
    with running_server(settings) as live, ThreadPoolExecutor(2) as pool:
        url = live.api_url + "/images/generations"
        slow = {"prompt": "x", "model": "tiny", "response_format": "b64_json", **SLOW}
        running = pool.submit(httpx.post, url, json=slow, timeout=60)
        live.wait_for(lambda body: body["models"]["tiny"]["running"] == 1)
        waiting = pool.submit(httpx.post, url, json=slow, timeout=60)
        live.wait_for(lambda body: body["models"]["tiny"]["queued"] == 1)

        live.state.engine.shutdown()  # what the app's lifespan does as the server stops
        stopped = assert_envelope(running.result(), 503, code="shutting_down")  # interrupted mid-run
        assert stopped["message"] == "The job was stopped: the server is shutting down."
        assert_envelope(waiting.result(), 503, code="shutting_down")  # dropped from the queue
        assert_envelope(post(live, "tiny"), 503, code="shutting_down")  # refused at the door
