"""GET /v1/models and /v1/models/{id}: OpenAI's shapes plus Easel's capabilities."""

from __future__ import annotations

from dataclasses import asdict

import httpx
import openai
import pytest

from pipelines.presets import QUALITIES
from weights.registry import load_registry

from ..conftest import KARLO, TINY, LiveServer


def test_list_has_models_and_aliases_in_openai_shape(client, api_server: LiveServer):
    sdk_ids = [model.id for model in client.models.list()]
    body = httpx.get(api_server.api_url + "/models").json()
    assert body["object"] == "list"
    ids = [model["id"] for model in body["data"]]
    assert ids == sdk_ids
    assert ids[:2] == [TINY, KARLO]
    assert set(ids[2:]) == set(load_registry().aliases)
    for model in body["data"]:
        assert model["object"] == "model"
        assert isinstance(model["created"], int) and model["created"] > 0
        assert model["owned_by"] == "easel"
        assert model["status"] == "ready"
        assert model.get("alias_of") == (None if model["id"] in (TINY, KARLO) else TINY)


def test_retrieve_alias_and_model(client):
    alias = client.models.retrieve("dall-e-3")
    assert alias.id == "dall-e-3" and alias.object == "model" and alias.owned_by == "easel"
    assert alias.model_extra["alias_of"] == TINY
    assert alias.model_extra["capabilities"]["max_n"] == 1
    model = client.models.retrieve(TINY)
    assert model.id == TINY and "alias_of" not in model.model_extra
    assert model.model_extra["capabilities"]["max_n"] == 10


def test_capabilities_describe_the_loaded_model(api_server: LiveServer, tiny_backend):
    info = tiny_backend.info
    caps = httpx.get(api_server.api_url + f"/models/{TINY}").json()["capabilities"]
    square = info.native_size_for(1, 1)
    assert caps["family"] == "kandinsky22"
    assert caps["native_size"] == f"{square[0]}x{square[1]}"
    assert caps["fixed_native_size"] is None
    assert caps["size_multiple"] == info.size_multiple
    assert caps["size_bounds"] == {"min_side": info.min_side, "max_side": info.max_side}
    assert caps["endpoints"] == ["generations", "edits", "variations"]
    assert caps["supports_negative_prompt"] is True
    assert caps["supports_guidance_interval"] is True
    assert set(caps["quality_presets"]) == set(QUALITIES)
    assert caps["quality_presets"]["low"] == asdict(info.presets["low"])
    assert caps["parameter_counts"] == info.parameter_counts and all(v > 0 for v in caps["parameter_counts"].values())
    assert caps["device"] == "cpu" and caps["dtype"] == "float32"
    # The CPU's default speed settings: the stock pipeline's SDPA attention, nothing compiled ahead.
    assert caps["optimizations"] == {"enabled": ["sdpa"], "warmed_up_batches": []}


def test_karlo_capabilities(api_server: LiveServer):
    caps = httpx.get(api_server.api_url + f"/models/{KARLO}").json()["capabilities"]
    assert caps["family"] == "karlo"
    assert caps["fixed_native_size"] == caps["native_size"]
    assert caps["endpoints"] == ["generations", "edits", "variations"]
    assert caps["edit_modes"] == ["whole_image"]  # decoded from noise: no masked edits
    assert caps["supports_negative_prompt"] is False
    assert caps["supports_guidance_interval"] is False
    assert caps["quality_presets"]["high"]["super_res_steps"] is not None
    assert caps["optimizations"] == {"enabled": ["sdpa"], "warmed_up_batches": []}


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


def test_each_model_tells_its_licence_and_weights_read_from_its_directory(client, api_server: LiveServer, tiny_backend):
    from server.serving.model_facts import model_facts

    body = httpx.get(api_server.api_url + f"/models/{TINY}").json()
    path = next(spec.path for spec in api_server.app.state.easel.settings.models if spec.name == TINY)
    facts = model_facts(path)
    assert body["license"] is None  # the tiny model's easel.json names none
    assert body["weights"] == {
        "parameters": sum(tiny_backend.info.parameter_counts.values()),
        "stored_dtypes": ["float32"],
        "disk_bytes": facts.disk_bytes,
    }
    assert facts.disk_bytes == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    alias = client.models.retrieve("dall-e-3")  # the SDK's Model parses the extra fields
    assert alias.model_extra["weights"] == body["weights"] and alias.model_extra["license"] is None


def test_the_shipped_model_is_mit_licensed():
    from server.serving.model_facts import model_facts

    shipped = load_registry().models["easel-mini"]
    facts = model_facts(shipped.path)
    assert facts.license == "mit" and facts.stored_dtypes == ("float16",)
    assert 8_000_000 < facts.parameters < 10_000_000
