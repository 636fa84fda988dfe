"""weights.footprint: parameter counts, stored dtypes and sizes read from weight files' headers, both hub layouts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from diffusers import UNet2DConditionModel
from transformers import CLIPVisionModelWithProjection

from tests.legacy_layout import to_legacy_layout
from weights.footprint import component_footprint, model_footprint, weight_files

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def legacy_kandinsky(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("legacy") / "kandinsky"
    shutil.copytree(tiny_model_dirs["kandinsky"], copy)
    return to_legacy_layout(copy)


def test_counts_match_the_loaded_modules(tiny_model_dirs: dict[str, Path]):
    model = tiny_model_dirs["kandinsky"]
    footprint = model_footprint(model)
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    encoder = CLIPVisionModelWithProjection.from_pretrained(model / "prior_image_encoder")
    assert footprint.component("unet").parameters == sum(p.numel() for p in unet.parameters())
    assert footprint.component("prior_image_encoder").parameters == sum(p.numel() for p in encoder.parameters())
    assert {c.folder for c in footprint.components} == {
        "unet", "movq", "prior_prior", "prior_image_encoder", "prior_text_encoder",
    }  # fmt: skip
    assert footprint.stored_dtypes == ("float32",)
    assert footprint.memory_bytes("float32") == pytest.approx(2 * footprint.memory_bytes("bfloat16"), rel=0.01)
    assert footprint.disk_bytes == sum(p.stat().st_size for p in model.rglob("*.safetensors"))


def test_the_2023_layout_reads_the_same_counts_from_bin_files(tiny_model_dirs: dict[str, Path], legacy_kandinsky: Path):
    today, legacy = model_footprint(tiny_model_dirs["kandinsky"]), model_footprint(legacy_kandinsky)
    assert legacy.component("unet").files == ("diffusion_pytorch_model.bin",)
    assert legacy.component("prior_text_encoder").files == ("pytorch_model.bin",)
    for component in today.components:
        assert legacy.component(component.folder).parameters == component.parameters
        assert legacy.component(component.folder).memory_bytes("float32") == component.memory_bytes("float32")
    assert legacy.component("prior_image_encoder").stored_dtypes == ("float16",)
    assert legacy.stored_dtypes == ("float16", "float32")
    assert not list(legacy_kandinsky.rglob("*.safetensors"))


def test_sharded_and_variant_weights_are_chosen_as_the_libraries_choose_them(
    tiny_model_dirs: dict[str, Path], tmp_path: Path
):
    unet = UNet2DConditionModel.from_pretrained(tiny_model_dirs["kandinsky"] / "unet")
    whole = component_footprint(tiny_model_dirs["kandinsky"] / "unet")
    sharded = tmp_path / "unet"
    unet.save_pretrained(sharded, max_shard_size="300KB")
    shards = weight_files(sharded)
    assert len(shards) > 1 and all("-of-" in name for name in shards)
    assert component_footprint(sharded).parameters == whole.parameters
    # A variant beside the plain weights is not counted; a folder of variant shards only is.
    unet.half().save_pretrained(sharded, variant="fp16", max_shard_size="300KB")
    assert weight_files(sharded) == shards
    only_variant = tmp_path / "variant-only"
    unet.save_pretrained(only_variant, variant="fp16", max_shard_size="300KB")
    variant_shards = weight_files(only_variant)
    assert len(variant_shards) > 1 and all(".fp16-" in name for name in variant_shards)
    assert component_footprint(only_variant).parameters == whole.parameters
    assert component_footprint(only_variant).stored_dtypes == ("float16",)


def test_the_legacy_layout_is_what_the_2023_repositories_hold(legacy_kandinsky: Path):
    index = json.loads((legacy_kandinsky / "model_index.json").read_text())
    assert index["_diffusers_version"] == "0.18.0.dev0"
    assert index["prior_image_processor"] == ["transformers", "CLIPImageProcessor"]
    assert sorted(p.name for p in (legacy_kandinsky / "prior_tokenizer").iterdir()) == [
        "merges.txt", "tokenizer_config.json", "vocab.json",
    ]  # fmt: skip
    assert not (legacy_kandinsky / "easel.json").exists()
    encoder_config = json.loads((legacy_kandinsky / "prior_image_encoder/config.json").read_text())
    assert encoder_config["torch_dtype"] == "float16"


def test_reading_footprints_never_imports_torch_for_safetensors(tiny_model_dirs: dict[str, Path]):
    # `easel pull` reads footprints while online, where model libraries must stay unimported.
    code = (
        "import sys; from weights.footprint import model_footprint; "
        f"print(model_footprint({str(tiny_model_dirs['kandinsky'])!r}).parameters); "
        "assert 'torch' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == model_footprint(tiny_model_dirs["kandinsky"]).parameters
