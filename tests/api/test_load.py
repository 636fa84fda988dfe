"""Many clients at once (real uvicorn, real SDK, tiny model): nothing lost, nothing cross-wired, nothing left behind."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from pipelines.base import ImageJob

from ..conftest import FAST, TINY, LiveServer, running_server, tiny_settings

CLIENTS = 16
REQUESTS_PER_CLIENT = 10  # enough to keep the queue of 4 full, and each client's images many, at a third of the CPU
# A batched image may differ from the same seed's image alone: batched matrix products round differently.
# tests/pipelines/test_batching.py measures it; docs/serving.md states it for easel-mini.
BATCH_TOLERANCE = 6
SIDE = 64  # the tiny model's native size: answers come unresized, so pixels compare exactly


@pytest.fixture(scope="module")
def loaded(tiny_model_dirs) -> Iterator[LiveServer]:
    # A short queue, so that 16 clients fill it: the 429s and the SDK's retries are part of the test.
    settings = tiny_settings(tiny_model_dirs, queue_size=4, max_batch_images=8)
    with running_server(settings) as live:
        yield live


def prompt_of(client: int) -> str:
    return ["a red circle", "a blue square", "a green star", "a cat"][client % 4] + f" number {client}"


def seed_of(client: int, request: int) -> int:
    return 1000 * client + request


async def one_client(client: int, api_url: str) -> list[tuple[int, np.ndarray]]:
    sdk = openai.AsyncOpenAI(base_url=api_url, api_key="any", max_retries=6)
    answers = []
    for request in range(REQUESTS_PER_CLIENT):
        seed = seed_of(client, request)
        result = await sdk.images.generate(
            prompt=prompt_of(client),
            model=TINY,
            size=f"{SIDE}x{SIDE}",
            response_format="b64_json",
            extra_body={**FAST, "seed": seed},
        )
        assert result.data is not None and len(result.data) == 1
        assert (result.data[0].model_extra or {}).get("seed") == seed  # Easel's extension: the seed it used
        image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
        answers.append((seed, np.asarray(image.convert("RGB"), dtype=np.int16)))
    await sdk.close()
    return answers


def reference(backend, client: int, seed: int) -> np.ndarray:
    preset = backend.info.presets["auto"].adjusted(prior_steps=FAST["prior_steps"], decoder_steps=FAST["decoder_steps"])
    job = ImageJob("generate", 1, SIDE, SIDE, [seed], preset, prompt=prompt_of(client))
    return np.asarray(backend.run(job)[0], dtype=np.int16)


def counter(server: LiveServer, name: str, **labels: str) -> float:
    """A metric's total over the samples whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics", timeout=10).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]
    return sum(s.value for s in samples if labels.items() <= s.labels.items())


def test_sixteen_clients_each_get_exactly_their_own_images(loaded: LiveServer, tiny_backend):
    async def everyone():
        return await asyncio.gather(*(one_client(client, loaded.api_url) for client in range(CLIENTS)))

    started = time.monotonic()
    results = asyncio.run(everyone())
    seconds = time.monotonic() - started
    worst = 0
    for client, answers in enumerate(results):
        assert len(answers) == REQUESTS_PER_CLIENT  # nothing lost
        for seed, pixels in answers:
            worst = max(worst, int(np.abs(pixels - reference(tiny_backend, client, seed)).max()))
    assert worst <= BATCH_TOLERANCE  # each image is its own seed's and prompt's: nothing cross-wired
    stats = loaded.model_stats(TINY)
    assert stats["failed"] == 0 and stats["queued"] == 0 and stats["running"] == 0
    assert counter(loaded, "easel_server_errors_total", route="/v1/images/generations") == 0
    batches = counter(loaded, "easel_batch_images_count")
    images = counter(loaded, "easel_batch_images_sum")
    print(
        f"\n{CLIENTS * REQUESTS_PER_CLIENT} images in {seconds:.1f} s, {batches:.0f} pipeline calls "
        f"({images / batches:.2f} images each), {counter(loaded, 'easel_rejected_total'):.0f} answered 429 and "
        f"retried by the SDK, worst pixel difference from the seed alone {worst}"
    )
    assert images / batches > 1.5  # requests from different clients did share pipeline calls


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_storm_of_disconnects_leaves_nothing_behind(loaded: LiveServer):
    slow = {"prior_steps": 200, "decoder_steps": 200, "n": 4}  # seconds of work: every client leaves long before

    async def leave_early(index: int) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            request = http.post(
                loaded.api_url + "/images/generations",
                json={"prompt": "a cat", "model": TINY, "seed": index, "stream": index % 2 == 0, **slow},
            )
            try:
                response = await asyncio.wait_for(request, timeout=0.05 + 0.05 * (index % 5))
            except (asyncio.TimeoutError, httpx.HTTPError):
                return  # the client left before its answer, as this test wants
            # Only a refusal can come sooner: the queue (4) is full, which a quiet machine answers in time.
            assert response.status_code == 429, response.text

    async def storm():
        for wave in range(4):
            await asyncio.gather(*(leave_early(10 * wave + i) for i in range(10)))

    asyncio.run(storm())  # warm-up: the first connections create the pools and threads that stay
    threads, descriptors = threading.active_count(), open_descriptors()
    cancelled = counter(loaded, "easel_jobs_cancelled_total")
    asyncio.run(storm())
    deadline = time.monotonic() + 60
    while True:
        stats = loaded.model_stats(TINY)
        if stats["queued"] == 0 and stats["running"] == 0:
            break
        assert time.monotonic() < deadline, stats
        time.sleep(0.1)
    assert counter(loaded, "easel_jobs_cancelled_total") > cancelled  # the jobs of clients that left were dropped
    # Sockets in their last close and threads on their way out take a moment, longer on a loaded machine; a leak
    # never goes away, so waiting for them costs nothing but the wait.
    deadline = time.monotonic() + 30
    while threading.active_count() > threads + 2 or open_descriptors() > descriptors + 5:
        assert time.monotonic() < deadline, (threading.active_count(), threads, open_descriptors(), descriptors)
        time.sleep(0.1)
    assert httpx.get(loaded.url + "/health", timeout=30).json() == {"status": "ok"}
