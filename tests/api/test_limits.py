"""Auth, body limit, queue limit, client disconnects, URL expiry and /health latency on a strict server.

The server here has two API keys, a queue of one waiting job per model, a
1 MiB body limit and a 2-second URL lifetime.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import openai
import pytest

from server.settings.model_specs import ModelSpec

from ..conftest import FAST, SLOW, TINY, LiveServer, assert_envelope, running_server, tiny_settings

KEYS = ("sk-first", "sk-second")
AUTH = {"authorization": f"Bearer {KEYS[1]}"}
BODY_LIMIT = 1024 * 1024
URL_TTL = 2.0


@pytest.fixture(scope="module")
def strict_server(tiny_model_dirs: dict[str, Path]):
    settings = tiny_settings(
        tiny_model_dirs,
        models=(ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"]),),
        aliases={"dall-e-2": TINY},
        api_keys=KEYS,
        queue_size=1,
        max_body_bytes=BODY_LIMIT,
        url_ttl_seconds=URL_TTL,
    )
    with running_server(settings) as live:
        yield live


def generations_url(server: LiveServer) -> str:
    return server.api_url + "/images/generations"


# -- auth -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer sk-wrong"},
        {"authorization": "Basic c2stZmlyc3Q="},
        {"authorization": "Bearer"},
        {"authorization": "Bearer sk-first-but-longer"},
    ],
)
def test_missing_or_wrong_key_is_401(strict_server: LiveServer, headers):
    for response in (
        httpx.get(strict_server.api_url + "/models", headers=headers),
        httpx.post(generations_url(strict_server), json={"prompt": "x"}, headers=headers),
    ):
        error = assert_envelope(response, 401, code="invalid_api_key")
        assert error["type"] == "invalid_request_error"
        assert "sk-wrong" not in error["message"]


@pytest.mark.parametrize("key", KEYS)
def test_every_configured_key_works(strict_server: LiveServer, key):
    client = openai.OpenAI(base_url=strict_server.api_url, api_key=key, max_retries=0)
    assert TINY in [model.id for model in client.models.list()]


def test_sdk_with_a_wrong_key_gets_authentication_error(strict_server: LiveServer):
    client = openai.OpenAI(base_url=strict_server.api_url, api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(prompt="x", model=TINY)
    assert caught.value.code == "invalid_api_key"


def test_health_needs_no_key(strict_server: LiveServer):
    assert httpx.get(strict_server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(strict_server.url + "/health/ready").status_code == 200


# -- body size --------------------------------------------------------------------------


def test_declared_body_over_the_limit_is_413(strict_server: LiveServer):
    body = b'{"prompt": "' + b"a" * (BODY_LIMIT + 10) + b'"}'
    response = httpx.post(
        generations_url(strict_server), content=body, headers={**AUTH, "content-type": "application/json"}
    )
    error = assert_envelope(response, 413, code="request_too_large")
    assert str(BODY_LIMIT) in error["message"]


def test_streamed_body_over_the_limit_is_413(strict_server: LiveServer):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(BODY_LIMIT // 16384 + 8):  # a little over the limit, no Content-Length
            yield b"a" * 16384

    response = httpx.post(
        generations_url(strict_server), content=chunks(), headers={**AUTH, "content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_envelope(response, 413, code="request_too_large")


def test_body_under_the_limit_is_read(strict_server: LiveServer):
    response = httpx.post(generations_url(strict_server), json={"prompt": "a" * 1000, "bogus": 1}, headers=AUTH)
    assert_envelope(response, 400, param="bogus")


# -- queue limit, disconnects, cancellation, /health latency -------------------------------


async def _wait_stats(server: LiveServer, condition, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=30) as http:  # not httpx's 5 s: a loaded machine may answer slower
        while True:
            stats = (await http.get(server.url + "/health/ready")).json()["models"][TINY]
            if condition(stats):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"stats never matched: {stats}")
            await asyncio.sleep(0.02)


def _slow_request(http: httpx.AsyncClient, server: LiveServer) -> asyncio.Task:
    body = {"prompt": "a slow one", "model": TINY, **SLOW}
    return asyncio.ensure_future(http.post(generations_url(server), json=body, headers=AUTH, timeout=120))


def test_full_queue_is_429_and_disconnected_clients_drop_their_jobs(strict_server: LiveServer):
    async def scenario():
        before = await _wait_stats(strict_server, lambda s: s["running"] == 0 and s["queued"] == 0)
        async with httpx.AsyncClient() as first_http, httpx.AsyncClient() as second_http:
            running = _slow_request(first_http, strict_server)
            await _wait_stats(strict_server, lambda s: s["running"] == 1)
            waiting = _slow_request(second_http, strict_server)
            await _wait_stats(strict_server, lambda s: s["queued"] == 1)

            sdk = openai.AsyncOpenAI(base_url=strict_server.api_url, api_key=KEYS[0], max_retries=0)
            with pytest.raises(openai.RateLimitError) as caught:
                await sdk.images.generate(prompt="one too many", model=TINY, extra_body=FAST)
            await sdk.close()
            response = caught.value.response
            assert response.status_code == 429
            assert int(response.headers["retry-after"]) >= 1
            assert response.headers["x-request-id"]
            assert caught.value.code == "queue_full"

            # The waiting client hangs up: its job leaves the queue while the first still runs.
            waiting.cancel()
            stats = await _wait_stats(strict_server, lambda s: s["queued"] == 0)
            assert stats["running"] == 1
            assert stats["cancelled"] == before["cancelled"] + 1

            # The running client hangs up: its job stops at the next denoising step.
            running.cancel()
            stats = await _wait_stats(strict_server, lambda s: s["running"] == 0)
            assert stats["cancelled"] == before["cancelled"] + 2
            assert stats["completed"] == before["completed"]
            for task in (running, waiting):
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(scenario())


def test_health_answers_quickly_during_a_generation(strict_server: LiveServer):
    async def scenario() -> list[float]:
        await _wait_stats(strict_server, lambda s: s["running"] == 0 and s["queued"] == 0)
        async with httpx.AsyncClient() as slow_http, httpx.AsyncClient() as http:
            job = _slow_request(slow_http, strict_server)
            await _wait_stats(strict_server, lambda s: s["running"] == 1)
            timings = []
            for _ in range(10):
                started = time.perf_counter()
                response = await http.get(strict_server.url + "/health")
                timings.append(time.perf_counter() - started)
                assert response.json() == {"status": "ok"}
            still = (await http.get(strict_server.url + "/health/ready")).json()["models"][TINY]
            assert still["running"] == 1  # the generation was in progress throughout
            job.cancel()
            await _wait_stats(strict_server, lambda s: s["running"] == 0)
        return timings

    timings = asyncio.run(scenario())
    # A pipeline step holds the CPU for tens of milliseconds on this machine; /health must not wait for it.
    assert max(timings) < 0.5, timings
    assert sorted(timings)[len(timings) // 2] < 0.1, timings


# -- URL expiry ---------------------------------------------------------------------------


def _generate_url(server: LiveServer) -> str:
    client = openai.OpenAI(base_url=server.api_url, api_key=KEYS[0], max_retries=0)
    return client.images.generate(prompt="short-lived", model="dall-e-2", size="256x256", extra_body=FAST).data[0].url


def test_url_expires_and_its_file_is_deleted(strict_server: LiveServer):
    url = _generate_url(strict_server)
    path = strict_server.state.store.directory / url.rsplit("/", 1)[1]
    fetched = httpx.get(url)  # no key needed for image URLs
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert path.is_file()
    deadline = time.monotonic() + URL_TTL + 60  # only ends a hung test: a loaded machine may sweep late
    while path.exists():  # the periodic sweep deletes it
        assert time.monotonic() < deadline, "expired image still on disk"
        time.sleep(0.1)
    assert_envelope(httpx.get(url), 404, code="image_not_found")


def test_expired_url_is_refused_and_deleted_on_access(strict_server: LiveServer):
    url = _generate_url(strict_server)
    path = strict_server.state.store.directory / url.rsplit("/", 1)[1]
    old = time.time() - URL_TTL - 1
    os.utime(path, (old, old))
    assert_envelope(httpx.get(url), 404, code="image_not_found")
    assert not path.exists()
