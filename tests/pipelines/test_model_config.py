"""A Kandinsky model's native size: ``easel.json`` first, else what its own decoder UNet and MoVQ configs declare."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipelines.model_config import (
    KANDINSKY_DEFAULT_SIDE,
    kandinsky_native_size,
    read_easel_config,
    read_kandinsky_native_size,
)

# kandinsky-community/kandinsky-2-2-decoder: unet/config.json's sample_size, and the MoVQ's four blocks (factor 8);
# benchmarks/gpu_models.py builds the same shapes.
REAL_UNET_SAMPLE_SIZE = 64
REAL_MOVQ_BLOCKS = 4


def _folder(tmp_path: Path, unet: dict, movq_blocks: int, easel: dict | None = None) -> Path:
    for part, config in (("unet", unet), ("movq", {"block_out_channels": [32] * movq_blocks})):
        (tmp_path / part).mkdir()
        (tmp_path / part / "config.json").write_text(json.dumps(config))
    (tmp_path / "model_index.json").write_text("{}")
    if easel is not None:
        (tmp_path / "easel.json").write_text(json.dumps(easel))
    return tmp_path


def test_the_real_kandinsky_decoder_declares_the_512_it_always_got(tmp_path: Path):
    config = read_easel_config(tmp_path)  # no easel.json, as the published repositories
    assert kandinsky_native_size(config, REAL_UNET_SAMPLE_SIZE, REAL_MOVQ_BLOCKS) == (512, 512)
    assert KANDINSKY_DEFAULT_SIDE == 512


def test_easel_json_wins_over_the_configs(tmp_path: Path):
    folder = _folder(tmp_path, {"sample_size": 64}, 4, easel={"native_size": [96, 64]})
    assert read_kandinsky_native_size(folder) == (96, 64)


@pytest.mark.parametrize(
    ("sample_size", "movq_blocks", "native"),
    [
        (32, 2, (64, 64)),  # the tiny test model
        (16, 3, (64, 64)),  # easel-mini's own configs agree with its easel.json
        ([24, 40], 2, (80, 48)),  # diffusers' [height, width]
        (None, 4, (512, 512)),  # a UNet that declares nothing: the real model's size
        (0, 4, (512, 512)),
        (True, 4, (512, 512)),
        ("64", 4, (512, 512)),
        ([64], 4, (512, 512)),
    ],
)
def test_the_decoder_unet_declares_the_size_without_easel_json(tmp_path: Path, sample_size, movq_blocks, native):
    unet = {} if sample_size is None else {"sample_size": sample_size}
    assert read_kandinsky_native_size(_folder(tmp_path, unet, movq_blocks)) == native


def test_a_folder_without_readable_configs_falls_back_to_the_default(tmp_path: Path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("not json")
    assert read_kandinsky_native_size(tmp_path) == (512, 512)


def test_the_shipped_model_declares_its_size_both_ways():
    shipped = Path(__file__).resolve().parents[2] / "weights" / "easel-mini"
    unet = json.loads((shipped / "unet" / "config.json").read_text())
    movq = json.loads((shipped / "movq" / "config.json").read_text())
    declared = read_easel_config(shipped)
    undeclared = dataclasses.replace(declared, native_size=None)
    from_configs = kandinsky_native_size(undeclared, unet["sample_size"], len(movq["block_out_channels"]))
    assert from_configs == declared.native_size == (64, 64)
