"""The model-memory manager's limits on real servers: requests waiting for a load take places in the model's queue,
a load that cannot succeed evicts nobody, and a container's cgroup memory limit sizes the budget.

The models are copies of one tiny Kandinsky directory (so each costs the same); the cgroup is a fake hierarchy
under ``tmp_path`` (tests/pipelines/test_cgroup.py), read by the server in this process.
"""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import torch

from pipelines.residency import model_cost
from server.settings.config import Settings
from server.settings.model_specs import ModelSpec
from server.settings.options import MemoryAmount
from tests.pipelines.test_cgroup import fake_hierarchy

from ..conftest import FAST, TEST_KEY, running_server
from .test_model_memory import KEY_HEADER, gated_loader, generate, metric, model, sdk, three_models, wait_until

GIB = 1024**3


def test_requests_waiting_for_a_load_fill_the_queue_and_the_next_is_429(tiny_model_dirs):
    gate = threading.Event()
    settings = three_models(tiny_model_dirs["kandinsky"], queue_size=2)
    with running_server(settings, loader=gated_loader("b", gate)) as live, ThreadPoolExecutor(3) as pool:
        client = sdk(live)
        waiting = [pool.submit(generate, client, "b") for _ in range(2)]
        wait_until(lambda: metric(live, "easel_requests_waited_for_load_total", model="b") == 2)
        body = {"prompt": "x", "model": "b", **FAST}
        full = httpx.post(live.api_url + "/images/generations", json=body, headers=KEY_HEADER, timeout=60)
        assert full.status_code == 429
        retry_after = int(full.headers["retry-after"])
        assert 1 <= retry_after <= 5  # the load's expected time left: no load of b measured yet, so 5 s less its age
        message = f"Model 'b' has 2 requests waiting, the most this server queues; retry after {retry_after} s."
        assert full.json() == {
            "error": {
                "message": message,
                "type": "rate_limit_error",
                "param": None,
                "code": "queue_full",
            }
        }
        assert full.headers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(openai.RateLimitError) as caught:
            generate(client, "b")
        assert caught.value.code == "queue_full"
        # A client's retry takes a place in the reserve, as it would in the engine's queue.
        retried = pool.submit(
            httpx.post,
            live.api_url + "/images/generations",
            json=body,
            headers={**KEY_HEADER, "x-stainless-retry-count": "1"},
            timeout=120,
        )
        wait_until(lambda: metric(live, "easel_requests_waited_for_load_total", model="b") == 3)
        assert model(live, "b")["status"] == "loading"
        gate.set()
        for future in waiting:
            future.result(timeout=120)
        assert retried.result(timeout=120).status_code == 200
        assert metric(live, "easel_images_generated_total", model="b") == 3
        generate(client, "a")  # the other models' queues were never touched
        generate(client, "b")  # and b's places came back once its load was done


def copies_of_tiny(tiny: Path, root: Path, names: str) -> dict[str, Path]:
    paths = {name: root / name for name in names}
    for path in paths.values():
        shutil.copytree(tiny, path)
    return paths


def two_loaded(paths: dict[str, Path], **overrides) -> Settings:
    """a and b loaded at start, c on demand, and a budget for two of them: c's load would evict a."""
    cost = model_cost(paths["a"], "kandinsky22", torch.device("cpu"), None, "none", copies=2).device_bytes
    values = dict(
        models=tuple(ModelSpec(name=name, family="kandinsky22", path=path) for name, path in paths.items()),
        memory_budget=MemoryAmount(fixed_bytes=int(cost * 2.5)),
        preload=("a", "b"),
        api_keys=(TEST_KEY,),
    )
    return Settings(**{**values, **overrides})


def damage(folder: Path, how: str) -> str:
    """Break the model folder ``how``; the file the refusal must name."""
    if how == "folder gone":
        shutil.rmtree(folder)
        return f"no directory {folder}"
    if how == "broken JSON":
        (folder / "unet" / "config.json").write_text("{not json")
        return f"{folder / 'unet' / 'config.json'}: not valid JSON"
    if how == "weights missing":
        (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
        return f"{folder / 'unet'} has no weights"
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\xff" * 64)
    return f"{folder / 'unet' / 'diffusion_pytorch_model.safetensors'}: not a safetensors file"


def assert_nobody_evicted(live) -> None:
    assert [model(live, name)["status"] for name in "ab"] == ["ready", "ready"]
    assert sum(metric(live, "easel_model_evictions_total", model=name, reason="room") for name in "ab") == 0
    assert [metric(live, "easel_model_loads_total", model=name, source="disk") for name in "ab"] == [1, 1]


@pytest.mark.parametrize("how", ["folder gone", "broken JSON", "weights missing", "weights header garbage"])
def test_a_model_whose_folder_broke_fails_without_evicting_anyone(tiny_model_dirs, tmp_path, how):
    paths = copies_of_tiny(tiny_model_dirs["kandinsky"], tmp_path, "abc")
    with running_server(two_loaded(paths)) as live:
        named = damage(paths["c"], how)  # after start, as a folder replaced or truncated under a running server
        with pytest.raises(openai.InternalServerError) as caught:
            generate(sdk(live), "c")
        assert caught.value.status_code == 503 and caught.value.code == "model_unavailable"
        assert named in caught.value.message
        assert model(live, "c")["status"] == "failed"
        assert_nobody_evicted(live)
        generate(sdk(live), "a")


def test_a_model_that_cannot_fit_even_with_the_idle_models_evicted_evicts_none(tiny_model_dirs, tmp_path, monkeypatch):
    paths = copies_of_tiny(tiny_model_dirs["kandinsky"], tmp_path / "models", "abc")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    fake_hierarchy(cgroup, monkeypatch, "0::/\n", {"memory.max": str(8 * GIB), "memory.current": "0"})
    with running_server(two_loaded(paths)) as live:
        # The container's memory fills up (another process in it): 0.25 GiB left, and c needs over 1 GiB.
        (cgroup / "sys-fs-cgroup" / "memory.current").write_text(str(8 * GIB - GIB // 4))
        with pytest.raises(openai.InternalServerError) as caught:
            generate(sdk(live), "c")
        message = caught.value.body["message"]  # type: ignore[index]
        assert caught.value.code == "model_unavailable" and message.startswith(
            "Model 'c' failed to load: model 'c' does not fit: it needs "
        )
        assert "is free (cgroup memory limit, with 0.0 GB of idle models evicted)" in message
        assert "\n" not in message
        assert_nobody_evicted(live)


def test_the_budget_is_a_share_of_the_containers_memory_limit(tiny_model_dirs, tmp_path, monkeypatch):
    tiny = tiny_model_dirs["kandinsky"]
    cost = model_cost(tiny, "kandinsky22", torch.device("cpu"), None, "none", copies=2).device_bytes
    limit = int(cost * 2.5 / 0.8)  # the default budget, 0.8 of it, holds two models, far less than this machine
    fake_hierarchy(tmp_path, monkeypatch, "0::/\n", {"memory.max": str(limit), "memory.current": "0"})
    settings = three_models(tiny, memory_budget=MemoryAmount(fraction=0.8))
    with running_server(settings) as live:
        assert live.state.residency.budget_bytes == int(min(limit, _machine_ram()) * 0.8)
        for name in "abc":
            generate(sdk(live), name)
        assert metric(live, "easel_model_evictions_total", model="a", reason="room") == 1
        assert [model(live, name)["status"] for name in "abc"] == ["unloaded", "ready", "ready"]


def test_a_container_too_small_for_the_model_is_refused_before_listening(tmp_path, monkeypatch):
    from server.app.preflight import check_before_listening
    from server.settings.options import ConfigError

    from ..conftest import EASEL_MINI

    fake_hierarchy(tmp_path, monkeypatch, "0::/\n", {"memory.max": str(GIB // 2), "memory.current": "0"})
    mini = ModelSpec(name="easel-mini", family="kandinsky22", path=EASEL_MINI)
    with pytest.raises(ConfigError) as caught:
        check_before_listening(Settings(models=(mini,)), (mini,))
    message = str(caught.value)
    assert message.startswith("--model: model 'easel-mini' does not fit: it needs ")
    assert "but only 0.5 GB is free (cgroup memory limit)" in message and "\n" not in message


def _machine_ram() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")
