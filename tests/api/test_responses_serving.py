"""/v1/responses as the Images API's peer: API key, request ids, metrics, a failure mid-stream, and retention."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from server.serving.kept import KeptResponse, KeptResponses
from server.settings.config import Settings
from server.settings.model_specs import ModelSpec
from tests.api.test_streaming import FailsAfterFirstPreview
from tests.conftest import TINY, LiveServer, assert_envelope, running_server

KEY = "sk-responses-test"
TOOL = {"type": "image_generation", "size": "64x64", "prior_steps": 2, "decoder_steps": 3}


@pytest.fixture(scope="module")
def keyed_server(tiny_model_dirs: dict[str, Path]) -> Iterator[LiveServer]:
    """A key-protected server whose model breaks right after its first partial image (jobs without one finish)."""
    from pipelines.loader import load_backend

    def loader(*args, **kwargs):
        return FailsAfterFirstPreview(load_backend(*args, **kwargs))

    spec = ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"])
    with running_server(Settings(models=(spec,), api_keys=(KEY,)), loader=loader) as live:
        yield live


def test_the_api_key_request_id_and_metrics_are_the_images_apis(keyed_server: LiveServer) -> None:
    body = {"model": "gpt-4o-mini", "input": "a red circle", "tools": [TOOL]}
    refused = httpx.post(keyed_server.api_url + "/responses", json=body, timeout=30)
    assert_envelope(refused, 401)
    headers = {"authorization": f"Bearer {KEY}", "x-request-id": "ha-task-1"}
    answered = httpx.post(keyed_server.api_url + "/responses", json=body, headers=headers, timeout=60)
    assert answered.status_code == 200 and answered.headers["x-request-id"] == "ha-task-1"
    assert answered.json()["output"][0]["status"] == "completed"
    metrics = httpx.get(keyed_server.url + "/metrics", headers=headers, timeout=10).text
    labels = ('route="/v1/responses"', 'status="200"', f'model="{TINY}"')
    assert any(
        line.startswith("easel_requests_total{") and all(label in line for label in labels)
        for line in metrics.splitlines()
    )


def test_a_failure_after_the_stream_started_is_response_failed(keyed_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=keyed_server.api_url, api_key=KEY, max_retries=0)
    stream = client.responses.create(
        model="gpt-4o-mini", input="a red circle", tools=[TOOL | {"partial_images": 2}], stream=True
    )
    events = list(stream)
    assert [e.type for e in events][-3:] == [
        "response.image_generation_call.generating",
        "response.image_generation_call.partial_image",
        "response.failed",
    ]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    assert failed.error.message.startswith("The server had an error while processing your request.")
    assert failed.output[0].status == "failed" and failed.output[0].result is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(failed.id)  # a failed response is not kept


def kept(response_id: str, age_seconds: float) -> KeptResponse:
    return KeptResponse(response_id, {"id": response_id}, b"png", "png", kept_at=time.monotonic() - age_seconds)


def test_responses_are_forgotten_after_the_ttl_and_over_the_limit() -> None:
    responses = KeptResponses(ttl_seconds=60, limit=2)
    responses.put(kept("resp_old", age_seconds=61))
    responses.put(kept("resp_a", age_seconds=1))
    assert responses.get("resp_old") is None and responses.get("resp_a") is not None
    responses.put(kept("resp_b", age_seconds=0))
    responses.put(kept("resp_c", age_seconds=0))
    assert responses.get("resp_a") is None  # the oldest goes first over the limit
    assert [responses.get(name) is not None for name in ("resp_b", "resp_c")] == [True, True]
