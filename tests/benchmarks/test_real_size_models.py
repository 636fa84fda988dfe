"""benchmarks/real_size_models.py: the real configurations it writes, counted on the meta device."""

from __future__ import annotations

import json

import pytest

from benchmarks.real_size_models import FOLDERS, KARLO_PARAMETERS, meta_modules, write_real_model
from weights.footprint import model_footprint


def test_karlo_with_its_image_variation_encoder_has_the_published_size():
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in meta_modules("karlo").items()}
    assert set(counts) == set(FOLDERS["karlo"])
    assert counts["image_encoder"] == pytest.approx(304e6, rel=0.005)  # CLIP ViT-L/14's vision tower
    assert sum(counts.values()) == pytest.approx(KARLO_PARAMETERS, rel=0.002)  # 3.726 B


def test_karlo_is_written_with_every_folder_the_backend_loads(tmp_path):
    target = write_real_model("karlo", tmp_path / "karlo", sparse=True)
    found = model_footprint(target)
    assert found.parameters == pytest.approx(KARLO_PARAMETERS, rel=0.002)  # 3.726 B
    assert {c.folder for c in found.components} >= set(FOLDERS["karlo"].values())
    processor = json.loads((target / "feature_extractor" / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 224, "width": 224}
