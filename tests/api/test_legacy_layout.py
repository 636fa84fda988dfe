"""Models in the hub's 2022-23 layout (.bin, fp16 image encoder, slow tokenizer, old names) serve like today's.

Each tiny model is rewritten by :func:`tests.legacy_layout.to_legacy_layout`
and served by a real server, driven with the openai SDK: it generates, varies
and edits. Where the weights are the same in both layouts (the image encoder
kept in float32, and the same ``easel.json``), the same seed gives the same
image as today's layout to within one grey level: the weights load bit-equal,
but CPU kernels round the last bit differently for tensors read from ``.bin``
and from memory-mapped safetensors.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI
from PIL import Image

from server.settings.config import Settings
from server.settings.model_specs import ModelSpec
from tests.api.test_edits import mask_png, picture
from tests.conftest import FAST, LiveServer, running_server
from tests.legacy_layout import to_legacy_layout

SIZE = "64x64"


def _legacy_copy(source: Path, target: Path, *, half_image_encoder: bool) -> Path:
    shutil.copytree(source, target)
    return to_legacy_layout(target, half_image_encoder=half_image_encoder)


def _same_weights(source: Path, target: Path) -> Path:
    legacy = _legacy_copy(source, target, half_image_encoder=False)
    shutil.copy(source / "easel.json", legacy / "easel.json")  # the same declared native size as the original
    return legacy


@pytest.fixture(scope="module")
def legacy_dirs(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("legacy-layout")
    return {
        "k-2023": _legacy_copy(tiny_model_dirs["kandinsky"], root / "kandinsky", half_image_encoder=True),
        "k-2023-same-weights": _same_weights(tiny_model_dirs["kandinsky"], root / "k-fp32"),
        "karlo-2023": _legacy_copy(tiny_model_dirs["karlo"], root / "karlo", half_image_encoder=True),
    }


@pytest.fixture(scope="module")
def legacy_server(tiny_model_dirs: dict[str, Path], legacy_dirs: dict[str, Path]) -> Iterator[LiveServer]:
    models = (
        ModelSpec(name="k-2023", family="kandinsky22", path=legacy_dirs["k-2023"]),
        ModelSpec(name="k-2023-same-weights", family="kandinsky22", path=legacy_dirs["k-2023-same-weights"]),
        ModelSpec(name="karlo-2023", family="karlo", path=legacy_dirs["karlo-2023"]),
        ModelSpec(name="k-today", family="kandinsky22", path=tiny_model_dirs["kandinsky"]),
        ModelSpec(name="karlo-today", family="karlo", path=tiny_model_dirs["karlo"]),
    )
    with running_server(Settings(models=models, default_model="k-today")) as live:
        yield live


@pytest.fixture
def sdk(legacy_server: LiveServer) -> OpenAI:
    return OpenAI(base_url=legacy_server.api_url, api_key="any", max_retries=0)


def _generate(sdk: OpenAI, model: str, seed: int = 11) -> bytes:
    result = sdk.images.generate(
        model=model, prompt="a red cat", size=SIZE, response_format="b64_json", extra_body={**FAST, "seed": seed}
    )
    assert result.data[0].b64_json
    return base64.b64decode(result.data[0].b64_json)


def test_the_2023_layout_is_what_the_test_serves(legacy_dirs: dict[str, Path]) -> None:
    kandinsky, karlo = legacy_dirs["k-2023"], legacy_dirs["karlo-2023"]
    assert not list(kandinsky.rglob("*.safetensors")) and not list(karlo.rglob("*.safetensors"))
    assert not (kandinsky / "easel.json").exists()
    assert json.loads((karlo / "model_index.json").read_text())["text_proj"] == ["unclip", "UnCLIPTextProjModel"]
    assert sorted(p.name for p in (kandinsky / "prior_tokenizer").iterdir()) == [
        "merges.txt", "tokenizer_config.json", "vocab.json",
    ]  # fmt: skip


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


@pytest.mark.parametrize(("legacy", "today"), [("k-2023-same-weights", "k-today"), ("karlo-2023", "karlo-today")])
def test_same_weights_in_either_layout_give_the_same_image(sdk: OpenAI, legacy: str, today: str) -> None:
    # Karlo's generation never meets its image encoder, so its fp16-stored encoder does not matter here.
    old, new = _pixels(_generate(sdk, legacy)), _pixels(_generate(sdk, today))
    assert old.shape == new.shape == (64, 64, 3)
    assert int(np.abs(old - new).max()) <= 1
    assert _generate(sdk, legacy) == _generate(sdk, legacy)  # and each layout is deterministic on its own


def test_a_float16_image_encoder_is_loaded_in_the_serving_dtype_and_generates(
    sdk: OpenAI, legacy_server: LiveServer
) -> None:
    image = Image.open(io.BytesIO(_generate(sdk, "k-2023")))
    assert image.size == (64, 64)
    ready = httpx.get(f"{legacy_server.url}/health/ready").json()
    assert ready["models"]["k-2023"]["dtype"] == "float32"


def test_without_easel_json_the_native_size_is_what_the_unet_declares(legacy_server: LiveServer) -> None:
    # The tiny decoder UNet's config says 32 latent pixels, times the tiny MoVQ's factor 2, as the real
    # decoder's says 64 x 8 = 512: the 2023 copy runs at its own 64x64, as its today's layout does by easel.json.
    for model in ("k-2023", "k-today"):
        caps = httpx.get(f"{legacy_server.api_url}/models/{model}").json()["capabilities"]
        assert caps["native_size"] == "64x64"


@pytest.mark.parametrize("model", ["k-2023", "karlo-2023"])
def test_variations_work_from_the_2023_layout(sdk: OpenAI, model: str) -> None:
    buffer = io.BytesIO()
    picture().resize((64, 64)).save(buffer, "PNG")
    result = sdk.images.create_variation(
        model=model,
        image=("in.png", buffer.getvalue(), "image/png"),
        response_format="b64_json",
        extra_body={"decoder_steps": FAST["decoder_steps"]},  # a variation has no prior stage
    )
    assert result.data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size[0] > 0


def test_edits_work_from_the_2023_layout(sdk: OpenAI) -> None:
    buffer = io.BytesIO()
    picture().save(buffer, "PNG")
    result = sdk.images.edit(
        model="k-2023",
        image=("in.png", buffer.getvalue(), "image/png"),
        mask=("mask.png", mask_png(), "image/png"),
        prompt="a blue hat",
        response_format="b64_json",
        extra_body=FAST,
    )
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size == picture().size
