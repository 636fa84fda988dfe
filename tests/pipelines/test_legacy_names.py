"""The 2023 repositories' CLIPFeatureExtractor name, which transformers 5 removed, still loads.

diffusers (0.42) maps the name to CLIPImageProcessor itself; this guards
against a version that stops doing so.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipelines.loader import load_backend
from tests.legacy_layout import to_legacy_layout


def test_an_index_naming_clip_feature_extractor_loads(tiny_model_dirs: dict[str, Path], tmp_path: Path):
    model = tmp_path / "kandinsky"
    shutil.copytree(tiny_model_dirs["kandinsky"], model)
    to_legacy_layout(model)
    index = json.loads((model / "model_index.json").read_text())
    index["prior_image_processor"] = ["transformers", "CLIPFeatureExtractor"]
    (model / "model_index.json").write_text(json.dumps(index))
    backend = load_backend("legacy", "kandinsky22", model, device="cpu")
    assert backend.info.dtype == "float32"
    assert {"generate", "variation"} <= set(backend.info.tasks)
