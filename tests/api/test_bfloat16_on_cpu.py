"""A model served in bfloat16 on a CPU without bfloat16 instructions: stored narrow, computed in float32."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from openai import OpenAI
from PIL import Image

from pipelines import compute_dtype

from ..conftest import FAST, KARLO, TINY, running_server, tiny_settings


@pytest.fixture(scope="module")
def bf16_server(tiny_model_dirs):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compute_dtype, "cpu_computes_natively", lambda dtype: dtype != torch.bfloat16)
        with running_server(tiny_settings(tiny_model_dirs, dtype="bfloat16")) as live:
            yield live


@pytest.mark.parametrize("model", [TINY, KARLO])
def test_models_say_what_is_stored_and_what_computes(bf16_server, model):
    client = OpenAI(base_url=bf16_server.api_url, api_key="any", max_retries=0)
    capabilities = client.models.retrieve(model).model_extra["capabilities"]
    assert (capabilities["dtype"], capabilities["compute_dtype"]) == ("bfloat16", "float32")
    asked = {"model": model, "prompt": "a red circle", "size": "256x256", "response_format": "b64_json"}
    result, again = (client.images.generate(**asked, extra_body={"seed": 5, **FAST}) for _ in range(2))
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (256, 256)
    assert result.data[0].b64_json == again.data[0].b64_json  # the same seed, the same bytes
