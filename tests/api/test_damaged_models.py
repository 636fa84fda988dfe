"""Damaged model folders: each broken file is named at load, and non-finite outputs fail the request.

A garbage JSON file, a missing weights file or shard, and weights holding NaN
are refused when the model loads, with the file named. Weights that are
finite but overflow (the way float16 can) make a stage output Inf: that
request is answered 500 ``model_error`` naming the model and the stage, and
counted in ``/metrics``, instead of an all-black image with status 200.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import openai
import pytest
from safetensors.torch import load_file, save_file

from pipelines.finite_weights import check_finite_weights
from pipelines.loader import load_backend
from pipelines.preflight import BrokenModelFile
from server.settings.config import Settings
from weights.spec import ModelSpec

from ..conftest import FAST, running_server

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def damaged_copy(source: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(source, copy)
    damage(copy)
    return copy


def rewrite_tensor(file: Path, name: str, value: float) -> None:
    tensors = load_file(file)
    tensors[name][:] = value
    save_file(tensors, file)


@pytest.mark.parametrize(
    "relative", ["model_index.json", "easel.json", "prior_tokenizer/tokenizer.json", "unet/config.json"]
)
def test_a_garbage_json_file_is_named(tiny_model_dirs: dict[str, Path], tmp_path: Path, relative: str):
    model = damaged_copy(tiny_model_dirs["kandinsky"], tmp_path, lambda d: (d / relative).write_text("garbage"))
    with pytest.raises(BrokenModelFile) as raised:
        load_backend("m", "kandinsky22", model)
    assert str(raised.value) == f"{model / relative}: not valid JSON (Expecting value: line 1 column 1)"


def test_a_missing_safetensors_file_names_what_was_looked_for(tiny_model_dirs: dict[str, Path], tmp_path: Path):
    model = damaged_copy(
        tiny_model_dirs["kandinsky"], tmp_path, lambda d: (d / "movq/diffusion_pytorch_model.safetensors").unlink()
    )
    with pytest.raises(FileNotFoundError) as raised:
        load_backend("m", "kandinsky22", model)
    movq = model / "movq"
    assert str(raised.value).startswith(
        f"{movq} has no weights: looked for {movq / 'diffusion_pytorch_model.safetensors'} and "
        f"{movq / 'diffusion_pytorch_model.bin'}"
    )


def test_a_missing_transformers_weights_file_and_folder_are_named(tiny_model_dirs: dict[str, Path], tmp_path: Path):
    model = damaged_copy(
        tiny_model_dirs["kandinsky"], tmp_path, lambda d: (d / "prior_text_encoder/model.safetensors").unlink()
    )
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin") as raised:
        load_backend("m", "kandinsky22", model)
    assert f"looked for {model / 'prior_text_encoder' / 'model.safetensors'}" in str(raised.value)
    shutil.rmtree(model / "prior_text_encoder")
    with pytest.raises(FileNotFoundError) as raised:
        load_backend("m", "kandinsky22", model)
    assert str(raised.value) == f"{model / 'prior_text_encoder'} is missing (model_index.json names it)"


def test_a_missing_shard_is_named(tiny_model_dirs: dict[str, Path], tmp_path: Path):
    def shard_index(model: Path) -> None:
        (model / UNET_WEIGHTS).rename(model / "unet/diffusion_pytorch_model-00001-of-00002.safetensors")
        index = {"weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors"}}
        index["weight_map"]["b"] = "diffusion_pytorch_model-00002-of-00002.safetensors"
        (model / "unet/diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))

    model = damaged_copy(tiny_model_dirs["kandinsky"], tmp_path, shard_index)
    with pytest.raises(FileNotFoundError) as raised:
        load_backend("m", "kandinsky22", model)
    shard = model / "unet" / "diffusion_pytorch_model-00002-of-00002.safetensors"
    assert str(raised.value) == f"{shard} is missing (its shard index names it)"


@pytest.mark.parametrize(
    ("family", "file", "tensor"),
    [
        ("kandinsky22", UNET_WEIGHTS, "conv_out.weight"),
        ("karlo", "decoder/diffusion_pytorch_model.safetensors", "conv_out.weight"),
        ("karlo", "image_encoder/model.safetensors", "visual_projection.weight"),
    ],
)
def test_weights_holding_nan_are_refused_at_load_naming_file_and_tensor(
    tiny_model_dirs: dict[str, Path], tmp_path: Path, family: str, file: str, tensor: str
):
    source = tiny_model_dirs["kandinsky" if family == "kandinsky22" else "karlo"]
    model = damaged_copy(source, tmp_path, lambda d: rewrite_tensor(d / file, tensor, float("nan")))
    with pytest.raises(BrokenModelFile) as raised:
        load_backend("m", family, model)
    assert str(raised.value) == f"{model / file}: the weight {tensor!r} holds NaN or infinite values"


def test_the_weight_check_passes_finite_weights_and_catches_inf_in_half_precision():
    import torch

    module = torch.nn.Linear(4, 4).half()
    with torch.no_grad():
        module.weight.fill_(60000.0)  # finite, but the sum overflows float16: confirmed element-wise, not refused
    check_finite_weights(Path("/nowhere"), {"unet": module})
    with torch.no_grad():
        module.bias[2] = float("inf")
    with pytest.raises(BrokenModelFile, match="'bias' holds NaN or infinite values"):
        check_finite_weights(Path("/nowhere"), {"unet": module})


@pytest.fixture(scope="module")
def overflowing_server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """``hot``: the tiny Kandinsky with a UNet whose finite output weights overflow to Inf; ``tiny``: healthy."""
    model = tmp_path_factory.mktemp("hot") / "model"
    shutil.copytree(tiny_model_dirs["kandinsky"], model)
    rewrite_tensor(model / UNET_WEIGHTS, "conv_out.weight", 3.0e38)
    settings = Settings(
        models=(
            ModelSpec(name="hot", family="kandinsky22", path=model),
            ModelSpec(name="tiny", family="kandinsky22", path=tiny_model_dirs["kandinsky"]),
        ),
        default_model="tiny",
    )
    with running_server(settings) as live:
        yield live


def test_a_stage_that_outputs_inf_fails_the_request_with_model_error(overflowing_server):
    client = openai.OpenAI(base_url=overflowing_server.api_url, api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as raised:
        client.images.generate(model="hot", prompt="a red circle", size="64x64", extra_body=FAST)
    error = raised.value.body
    assert raised.value.status_code == 500
    assert error == {
        "message": "Model 'hot' produced NaN or infinite values in its decoder stage, so it has no image to "
        "return. Its weights may be damaged, or its dtype may overflow for this input (try --dtype float32).",
        "type": "server_error",
        "param": None,
        "code": "model_error",
    }
    healthy = client.images.generate(model="tiny", prompt="a red circle", size="64x64", extra_body=FAST)
    assert len(healthy.data) == 1 and healthy.data[0].url
    metrics = httpx.get(overflowing_server.url + "/metrics", timeout=10).text
    assert 'easel_nonfinite_outputs_total{model="hot",stage="decoder"} 1.0' in metrics
    assert 'model="tiny"' not in "".join(line for line in metrics.splitlines() if "nonfinite_outputs_total{" in line)


def test_the_public_readiness_check_shows_a_failed_model_without_its_paths(
    tiny_model_dirs: dict[str, Path], tmp_path: Path
):
    missing = tmp_path / "secret-place" / "k22"
    settings = Settings(
        models=(
            ModelSpec(name="tiny", family="kandinsky22", path=tiny_model_dirs["kandinsky"]),
            ModelSpec(name="gone", family="kandinsky22", path=missing),
        ),
        default_model="tiny",
        api_keys=("sk-right",),
    )
    with running_server(settings, wait_ready=False) as live:
        body = live.wait_for(
            lambda b: b["models"]["gone"]["status"] == "failed" and b["models"]["tiny"]["status"] == "ready"
        )
        public = body["models"]["gone"]["error"]
        assert str(tmp_path) not in json.dumps(body)
        assert public == (
            "model 'gone': no directory <model directory>. Download it with `easel pull kandinsky-2-2`, "
            "or point the entry at a saved pipeline."
        )
        for key in (None, "sk-wrong"):
            headers = {"authorization": f"Bearer {key}"} if key else {}
            seen = httpx.get(live.url + "/health/ready", headers=headers, timeout=10).json()
            assert seen["models"]["gone"]["error"] == public
        keyed = httpx.get(live.url + "/health/ready", headers={"authorization": "Bearer sk-right"}, timeout=10)
        assert keyed.json()["models"]["gone"]["error"] == public.replace("<model directory>", str(missing))
