"""The model-memory manager on real servers: load on demand, LRU eviction within a budget, pins, shared loads,
load timeouts, failed loads with back-off, idle unload (RSS measured), the operators' load and unload.

Three tiny models (the same tiny Kandinsky directory under three names, so each costs the same) and a
``--memory-budget`` that holds two of them; the loads and evictions are read from ``/metrics``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import openai
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from pipelines.residency import model_cost
from server.settings.config import Settings
from server.settings.model_specs import ModelSpec
from server.settings.options import MemoryAmount

from ..conftest import FAST, LOOPBACK_TLS, TEST_KEY, LiveServer, running_server

KEY_HEADER = {"authorization": f"Bearer {TEST_KEY}"}


def three_models(path: Path, **overrides) -> Settings:
    """Models a, b and c on one tiny directory; a budget for two of them; ``a`` loads at start."""
    cost = model_cost(path, "kandinsky22", torch.device("cpu"), None, "none", copies=2).device_bytes
    values = dict(
        models=tuple(ModelSpec(name=name, family="kandinsky22", path=path) for name in ("a", "b", "c")),
        memory_budget=MemoryAmount(fixed_bytes=int(cost * 2.5)),
        preload=("a",),
        api_keys=(TEST_KEY,),
    )
    values.update(overrides)
    return Settings(**values)


def metric(server: LiveServer, name: str, **labels: str) -> float:
    text = httpx.get(server.url + "/metrics", headers=KEY_HEADER, timeout=10, verify=LOOPBACK_TLS).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def model(server: LiveServer, name: str) -> dict:
    return httpx.get(server.api_url + f"/models/{name}", headers=KEY_HEADER, timeout=10, verify=LOOPBACK_TLS).json()


def generate(client: openai.OpenAI, name: str) -> None:
    result = client.images.generate(prompt="a red circle", model=name, size="256x256", extra_body=FAST)
    assert len(result.data) == 1 and result.data[0].url


def sdk(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.api_url, api_key=TEST_KEY, max_retries=0, timeout=120)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_b_c_a_load_on_demand_and_evict_the_least_recently_used(tiny_model_dirs):
    with running_server(three_models(tiny_model_dirs["kandinsky"])) as live:
        assert [model(live, name)["status"] for name in "abc"] == ["ready", "unloaded", "unloaded"]
        assert model(live, "a")["memory"]["tier"] == "device" and model(live, "b")["memory"]["tier"] is None
        client = sdk(live)
        for name in "abca":
            generate(client, name)
        loads = {name: metric(live, "easel_model_loads_total", model=name, source="disk") for name in "abc"}
        evictions = {name: metric(live, "easel_model_evictions_total", model=name, reason="room") for name in "abc"}
        assert loads == {"a": 2, "b": 1, "c": 1}  # a at start, b, c (a out), a again (b out: used before c)
        assert evictions == {"a": 1, "b": 1, "c": 0}
        assert [model(live, name)["status"] for name in "abc"] == ["ready", "unloaded", "ready"]
        waited = sum(metric(live, "easel_requests_waited_for_load_total", model=name) for name in "abc")
        assert waited == 3
        cost = model(live, "a")["memory"]["device_bytes"]
        assert metric(live, "easel_model_resident_bytes", model="a", tier="device") == cost
        assert metric(live, "easel_model_resident_bytes", model="b", tier="device") == 0
        assert httpx.get(live.url + "/health/ready", timeout=10).status_code == 200


def gated_loader(gated: str, gate: threading.Event, fail: str | None = None):
    from pipelines.loader import load_backend

    def loader(name, family, path, **kwargs):
        if name == fail:
            raise MemoryError("out of memory while loading (the test's)")
        if name == gated:
            gate.wait(120)
        return load_backend(name, family, path, **kwargs)

    return loader


def test_eight_concurrent_requests_share_one_load_and_all_succeed(tiny_model_dirs):
    gate = threading.Event()
    settings = three_models(tiny_model_dirs["kandinsky"])
    with running_server(settings, loader=gated_loader("b", gate)) as live, ThreadPoolExecutor(8) as pool:
        client = sdk(live)
        futures = [pool.submit(generate, client, "b") for _ in range(8)]
        wait_until(lambda: metric(live, "easel_requests_waited_for_load_total", model="b") == 8)
        assert model(live, "b")["status"] == "loading"
        gate.set()
        for future in futures:
            future.result(timeout=120)  # raises if any request failed
        assert metric(live, "easel_model_loads_total", model="b", source="disk") == 1
        assert metric(live, "easel_images_generated_total", model="b") == 8


def test_a_load_past_the_timeout_is_503_with_retry_after(tiny_model_dirs):
    gate = threading.Event()
    settings = three_models(tiny_model_dirs["kandinsky"], load_timeout_seconds=0.5)
    with running_server(settings, loader=gated_loader("b", gate)) as live:
        body = {"prompt": "x", "model": "b", **FAST}
        response = httpx.post(live.api_url + "/images/generations", json=body, headers=KEY_HEADER, timeout=60)
        assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
        assert response.json() == {
            "error": {
                "message": "Model 'b' did not finish loading within 0.5 s; retry shortly.",
                "type": "server_error",
                "param": None,
                "code": "model_loading",
            }
        }
        gate.set()  # the load goes on without the request that gave up; the next request finds it ready
        wait_until(lambda: model(live, "b")["status"] == "ready")
        generate(sdk(live), "b")


def test_a_pinned_model_is_never_evicted(tiny_model_dirs):
    settings = three_models(tiny_model_dirs["kandinsky"], pin=("a",))
    with running_server(settings) as live:
        client = sdk(live)
        for name in "bcbca":
            generate(client, name)
            assert model(live, "a")["status"] == "ready"
        assert metric(live, "easel_model_evictions_total", model="a", reason="room") == 0
        assert metric(live, "easel_model_loads_total", model="a", source="disk") == 1
        assert metric(live, "easel_model_loads_total", model="b", source="disk") == 2
        assert model(live, "a")["memory"]["pinned"] is True
        unload = httpx.post(live.api_url + "/models/a/unload", headers=KEY_HEADER, timeout=60)
        assert unload.status_code == 409 and unload.json()["error"]["code"] == "model_pinned"


def test_a_failing_load_fails_that_model_only_and_is_retried_after_a_back_off(tiny_model_dirs):
    settings = three_models(tiny_model_dirs["kandinsky"])
    with running_server(settings, loader=gated_loader("none", threading.Event(), fail="c")) as live:
        client = sdk(live)
        with pytest.raises(openai.InternalServerError) as caught:
            generate(client, "c")
        assert caught.value.status_code == 503 and caught.value.code == "model_unavailable"
        assert "MemoryError: out of memory while loading" in caught.value.message
        listed = model(live, "c")
        assert listed["status"] == "failed" and listed["error"].startswith("MemoryError")
        generate(client, "a")  # the others keep serving
        generate(client, "b")
        assert metric(live, "easel_model_load_failures_total", model="c") == 1

        def retried() -> bool:  # within the back-off a request is answered at once; after it, the load is retried
            with pytest.raises(openai.InternalServerError):
                generate(client, "c")
            return metric(live, "easel_model_load_failures_total", model="c") == 2

        wait_until(retried)
        generate(client, "a")  # a retried load's eviction (it made room before failing) costs a reload, no error
        generate(client, "b")
        assert model(live, "c")["status"] == "failed"


def test_operators_load_and_unload_behind_the_api_key(tiny_model_dirs):
    with running_server(three_models(tiny_model_dirs["kandinsky"])) as live:
        assert httpx.post(live.api_url + "/models/b/load", timeout=60).status_code == 401
        loaded = httpx.post(live.api_url + "/models/b/load", headers=KEY_HEADER, timeout=60)
        assert loaded.status_code == 200 and loaded.json()["status"] == "ready"
        assert loaded.json()["memory"]["tier"] == "device"
        unloaded = httpx.post(live.api_url + "/models/b/unload", headers=KEY_HEADER, timeout=60)
        assert unloaded.status_code == 200
        assert (unloaded.json()["status"], unloaded.json()["memory"]["tier"]) == ("unloaded", None)
        assert metric(live, "easel_model_evictions_total", model="b", reason="request") == 1
        missing = httpx.post(live.api_url + "/models/nope/load", headers=KEY_HEADER, timeout=60)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError) as caught:
            generate(sdk(live), "nope")
        assert caught.value.code == "model_not_found" and caught.value.body["param"] == "model"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_an_idle_model_unloads_and_its_memory_returns(tiny_model_dirs):
    from ..conftest import EASEL_MINI

    if not (EASEL_MINI / "model_index.json").is_file():
        pytest.skip("weights/easel-mini is not trained yet")
    specs = (
        ModelSpec(name="tiny", family="kandinsky22", path=tiny_model_dirs["kandinsky"]),
        ModelSpec(name="mini", family="kandinsky22", path=EASEL_MINI, presets="easel-mini"),
    )
    settings = Settings(models=specs, preload=("tiny",), pin=("tiny",), idle_unload_seconds=1.0, api_keys=(TEST_KEY,))
    with running_server(settings) as live:
        client = sdk(live)
        generate(client, "mini")
        loaded = rss_bytes()
        weights = model(live, "mini")["memory"]["host_bytes"]  # its weights, both worker copies
        wait_until(lambda: model(live, "mini")["memory"]["tier"] is None)  # set once the memory is freed
        dropped = loaded - rss_bytes()
        print(
            f"easel-mini: {weights / 1e6:.1f} MB of weights; RSS {loaded / 1e6:.1f} MB, dropped {dropped / 1e6:.1f} MB"
        )
        assert dropped >= 0.5 * weights
        assert metric(live, "easel_model_evictions_total", model="mini", reason="idle") == 1
        assert model(live, "tiny")["status"] == "ready"  # pinned: never unloaded for idleness
        generate(client, "mini")  # and it comes back on demand


def test_the_engine_parks_a_model_in_cpu_ram_and_brings_it_back_without_reading_the_disk(tiny_model_dirs):
    """The warm tier's moves, on a CPU (``.to("cpu")`` there moves nothing): the parked copies come back, and make
    the same bytes; an unload never takes a model with a job running."""
    import asyncio

    from server.engine.base import ModelToLoad
    from server.engine.local import LocalEngine
    from tests.server.test_engine import make_job

    reads: list[str] = []

    def loader(name, family, path, **kwargs):
        from pipelines.loader import load_backend

        reads.append(name)
        return load_backend(name, family, path, **kwargs)

    engine = LocalEngine(queue_size=4, loader=loader, workers=1)
    spec = ModelSpec(name="tiny", family="kandinsky22", path=tiny_model_dirs["kandinsky"])

    async def one_image(job) -> bytes:
        return (await engine.submit("tiny", job).result()).images[0].tobytes()

    async def busy_unload(job) -> bool:
        handle = engine.submit("tiny", job)
        refused = not await asyncio.to_thread(engine.unload, "tiny")  # a job waits or runs: it stays
        await handle.result()
        return refused

    try:
        info = engine.load(ModelToLoad(spec, None, None))
        job = make_job(engine._lanes["tiny"].replicas[0], seed=3)
        before = asyncio.run(one_image(job))
        assert asyncio.run(busy_unload(replace(job, preset=job.preset.adjusted(decoder_steps=40))))  # a second or more
        assert engine.unload("tiny", park=True) and engine.parked("tiny") and engine.stats("tiny") is None
        assert engine.load(ModelToLoad(spec, None, None)) is info  # the same backend, back from CPU RAM
        assert reads == ["tiny"] and not engine.parked("tiny")
        assert asyncio.run(one_image(job)) == before
        assert engine.unload("tiny") and engine.stats("tiny") is None
    finally:
        engine.shutdown()


def test_a_model_that_can_never_fit_and_preloads_past_the_budget_are_refused_before_listening():
    from server.app.preflight import check_before_listening
    from server.settings.options import ConfigError

    from ..conftest import EASEL_MINI

    mini = ModelSpec(name="easel-mini", family="kandinsky22", path=EASEL_MINI)
    other = ModelSpec(name="other", family="kandinsky22", path=EASEL_MINI)
    tiny_budget = Settings(models=(mini,), memory_budget=MemoryAmount(fixed_bytes=25 * 1024 * 1024))
    with pytest.raises(ConfigError) as caught:
        check_before_listening(tiny_budget, tiny_budget.models)
    assert str(caught.value).startswith("--memory-budget: model 'easel-mini' can never fit: it needs ")
    assert str(caught.value).endswith("more than the budget of 26.2 MB (0.0244141 GiB); raise --memory-budget")
    assert "\n" not in str(caught.value)

    cost = model_cost(EASEL_MINI, "kandinsky22", torch.device("cpu"), None, "none", copies=2).device_bytes
    for_one = MemoryAmount(fixed_bytes=int(cost * 1.5))
    both = Settings(models=(mini, other), preload=("easel-mini", "other"), memory_budget=for_one)
    with pytest.raises(ConfigError, match=r"^--preload: the preloaded models need .* together, more than"):
        check_before_listening(both, both.models)
    check_before_listening(replace(both, preload=("easel-mini",)), both.models)  # the other loads on demand
