"""--quantize and --step-cache reach the model replicas on Ray: the same report and the same bytes as plain serving."""

from __future__ import annotations

import base64

from openai import OpenAI

from server.settings.ray_serve import RayServeSettings
from tests.conftest import TINY, running_server, tiny_settings

from .conftest import ENGINE_CORES, deployed

STEPS = {"prior_steps": 2, "decoder_steps": 6}  # enough decoder steps for a cache of 3 to skip some


def _images(client: OpenAI) -> list[bytes]:
    """Bytes of the model's own setting, a request's interval 1 and a request's interval 2, for one seed."""
    answers = [
        client.images.generate(prompt="a red circle", model=TINY, size="128x128", response_format="b64_json",
                               extra_body={"seed": 3, **STEPS, **extra})
        for extra in ({}, {"decoder_step_cache": 1}, {"decoder_step_cache": 2})
    ]  # fmt: skip
    return [base64.b64decode(answer.data[0].b64_json) for answer in answers]


def test_replicas_load_quantized_with_a_step_cache_as_plain_serving_does(serve_port, tiny_model_dirs, tmp_path):
    savings = {"quantize": "int8", "step_cache": 3}
    scaling = RayServeSettings(replicas=1, ingress_replicas=1, replica_cpus=ENGINE_CORES)  # cores: as plain serving
    with deployed(serve_port, tiny_model_dirs["kandinsky"], tmp_path, scaling, **savings) as app:
        ray_client = OpenAI(base_url=app.api_url, api_key="any", max_retries=0)
        on_ray = ray_client.models.retrieve(TINY).model_extra["capabilities"]
        ray_images = _images(ray_client)
    with running_server(tiny_settings(tiny_model_dirs, **savings)) as live:
        plain_client = OpenAI(base_url=live.api_url, api_key="any", max_retries=0)
        plain = plain_client.models.retrieve(TINY).model_extra["capabilities"]
        plain_images = _images(plain_client)
    assert on_ray["optimizations"]["step_cache"] == 3 and on_ray["optimizations"]["quantize"]["mode"] == "int8"
    assert on_ray["optimizations"]["quantize"] == plain["optimizations"]["quantize"]
    assert on_ray["supports_step_cache"] is True
    assert ray_images == plain_images
    assert len(set(ray_images)) == 3  # the model's cache of 3, a request's 1 and a request's 2 all differ
