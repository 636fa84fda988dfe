"""Which files ``easel pull`` takes from a hub folder, on file lists as the hub's repositories hold them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.hubfiles import WeightFile, plain_name, select_files, weight_file, write_plain_index
from cli.recipes import RECIPES
from weights.registry import KNOWN_PULLS


@pytest.mark.parametrize(
    "name, kind",
    [
        ("unet/diffusion_pytorch_model.safetensors", WeightFile(".safetensors", None, False)),
        ("unet/diffusion_pytorch_model.fp16.safetensors", WeightFile(".safetensors", "fp16", False)),
        ("unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors", WeightFile(".safetensors", "fp16", False)),
        ("unet/diffusion_pytorch_model-00001-of-00002.safetensors", WeightFile(".safetensors", None, False)),
        ("unet/diffusion_pytorch_model.safetensors.index.json", WeightFile(".safetensors", None, True)),
        ("unet/diffusion_pytorch_model.safetensors.index.fp16.json", WeightFile(".safetensors", "fp16", True)),
        ("text_encoder/model.fp16.safetensors.index.json", WeightFile(".safetensors", "fp16", True)),
        ("unet/diffusion_pytorch_model.non_ema.bin", WeightFile(".bin", "non_ema", False)),
        ("unet/diffusion_pytorch_model.ema.bin", WeightFile(".bin", "ema", False)),
        ("text_encoder/pytorch_model.bin", WeightFile(".bin", None, False)),
        ("text_encoder/flax_model.msgpack", WeightFile(".msgpack", None, False)),
        ("text_encoder/config.json", None),
        ("tokenizer/vocab.json", None),
        ("README.md", None),
    ],
)
def test_weight_files_are_told_apart_from_the_rest(name: str, kind: WeightFile | None):
    assert weight_file(name) == kind


def test_plain_weights_are_taken_and_no_variant_or_other_format_beside_them():
    names = [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "unet/diffusion_pytorch_model.non_ema.safetensors",
        "unet/flax_model.msgpack",
        "README.md",
    ]
    chosen = select_files(names, ("unet",))
    assert chosen.files == ["unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert chosen.variants == {}


def test_sharded_plain_weights_come_with_their_index_only():
    names = [
        "text_encoder/config.json",
        "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.json",
        "text_encoder/model.fp16-00001-of-00002.safetensors",
        "text_encoder/model.fp16-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.fp16.json",
        "text_encoder/pytorch_model.bin",
    ]
    assert select_files(names, ("text_encoder",)).files == [
        "text_encoder/config.json",
        "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.json",
    ]


def test_a_folder_with_only_variants_gets_the_one_that_serves_best_and_it_is_reported():
    names = [
        "prior/config.json",
        "prior/diffusion_pytorch_model.fp16.safetensors",
        "prior/diffusion_pytorch_model.non_ema.safetensors",
        "prior/diffusion_pytorch_model.fp16.bin",
        "movq/config.json",
        "movq/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "movq/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "movq/diffusion_pytorch_model.safetensors.index.fp16.json",
        "image_encoder/config.json",
        "image_encoder/pytorch_model.bin",  # the 2023 layout: plain .bin only
    ]
    chosen = select_files(names, ("prior", "movq", "image_encoder"))
    assert chosen.files == [
        "image_encoder/config.json",
        "image_encoder/pytorch_model.bin",
        "movq/config.json",
        "movq/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "movq/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "movq/diffusion_pytorch_model.safetensors.index.fp16.json",
        "prior/config.json",
        "prior/diffusion_pytorch_model.fp16.safetensors",
    ]
    assert chosen.variants == {"prior": "fp16", "movq": "fp16"}
    full = select_files(["prior/x.fp16.safetensors", "prior/x.fp32.safetensors", "prior/x.ema.bin"], ("prior",))
    assert full.files == ["prior/x.fp32.safetensors"] and full.variants == {"prior": "fp32"}


def test_a_taken_variant_gets_the_plain_names_and_its_index_names_them(tmp_path: Path):
    assert plain_name("movq/diffusion_pytorch_model.fp16.safetensors") == "movq/diffusion_pytorch_model.safetensors"
    assert plain_name("model.fp16-00001-of-00002.safetensors") == "model-00001-of-00002.safetensors"
    assert plain_name("model.safetensors.index.fp16.json") == "model.safetensors.index.json"
    assert plain_name("model.fp16.safetensors.index.json") == "model.safetensors.index.json"
    assert plain_name("unet/diffusion_pytorch_model.bin") == "unet/diffusion_pytorch_model.bin"
    assert plain_name("unet/config.json") == "unet/config.json"
    source = tmp_path / "model.safetensors.index.fp16.json"
    weight_map = {"a": "model.fp16-00001-of-00002.safetensors", "b": "model.fp16-00002-of-00002.safetensors"}
    source.write_text(json.dumps({"metadata": {"total_size": 8}, "weight_map": weight_map}))
    write_plain_index(source, tmp_path / "out" / "model.safetensors.index.json")
    written = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert written == {
        "metadata": {"total_size": 8},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }


def test_the_registry_knows_every_model_pull_can_fetch():
    # server/settings/model_specs.py tells an unpulled known name to `easel pull` it, from weights.registry's list.
    assert sorted(KNOWN_PULLS) == sorted(RECIPES)
