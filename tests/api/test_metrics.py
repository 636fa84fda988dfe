"""``GET /metrics``: Prometheus text, behind the API key, counting what the server did."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import FAST, TINY, LiveServer, running_server, tiny_settings

KEY = "sk-metrics"


@pytest.fixture(scope="module")
def metered(tiny_model_dirs) -> Iterator[LiveServer]:
    with running_server(tiny_settings(tiny_model_dirs, api_keys=(KEY,), queue_size=1)) as live:
        yield live


def samples(server: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(server.url + "/metrics", headers={"authorization": f"Bearer {KEY}"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_the_key_when_keys_are_configured(metered: LiveServer):
    response = httpx.get(metered.url + "/metrics", timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_a_generation_is_counted_everywhere_it_passes(metered: LiveServer):
    before = samples(metered)
    client = openai.OpenAI(base_url=metered.api_url, api_key=KEY, max_retries=0)
    client.images.generate(prompt="a red circle", model=TINY, n=2, size="256x256", extra_body=FAST)
    after = samples(metered)

    route = "/v1/images/generations"
    assert value(after, "easel_requests_total", route=route, status="200", model=TINY) == (
        value(before, "easel_requests_total", route=route, status="200", model=TINY) + 1
    )
    assert (
        value(after, "easel_images_generated_total", model=TINY)
        == value(before, "easel_images_generated_total", model=TINY) + 2
    )
    assert (
        value(after, "easel_batch_images_count", model=TINY)
        == value(before, "easel_batch_images_count", model=TINY) + 1
    )
    assert value(after, "easel_batch_images_sum", model=TINY) == value(before, "easel_batch_images_sum", model=TINY) + 2
    assert value(after, "easel_queue_wait_seconds_count", model=TINY) > value(
        before, "easel_queue_wait_seconds_count", model=TINY
    )
    for stage in ("text_encoder", "prior", "decoder", "image_decode"):
        assert value(after, "easel_stage_seconds_count", model=TINY, stage=stage) > value(
            before, "easel_stage_seconds_count", model=TINY, stage=stage
        ), stage
    assert value(after, "easel_request_duration_seconds_count", route=route) > 0
    assert value(after, "easel_worker_busy_seconds_total", device="cpu") > value(
        before, "easel_worker_busy_seconds_total", device="cpu"
    )
    assert value(after, "easel_model_state", model=TINY, state="ready") == 1.0
    assert value(after, "easel_model_state", model=TINY, state="loading") == 0.0
    assert value(after, "easel_queue_depth", model=TINY) == 0.0


def test_refusals_and_errors_have_their_counters(metered: LiveServer):
    before = samples(metered)
    client = openai.OpenAI(base_url=metered.api_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.images.generate(prompt="a red circle", model=TINY, n=11)
    with pytest.raises(openai.NotFoundError):
        client.images.generate(prompt="a red circle", model="no-such-model")
    after = samples(metered)
    route = "/v1/images/generations"
    # Refused before a model was resolved: no model label, and no label for a made-up name either.
    assert value(after, "easel_requests_total", route=route, status="400", model="") == (
        value(before, "easel_requests_total", route=route, status="400", model="") + 1
    )
    assert value(after, "easel_requests_total", route=route, status="404", model="") == (
        value(before, "easel_requests_total", route=route, status="404", model="") + 1
    )
    assert not any(labels and ("model", "no-such-model") in labels for _, labels in after)
