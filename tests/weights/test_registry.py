"""Registry files: the model's family under "family", and files written before that, which said "backend"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weights.registry import REGISTRY_PATH, load_registry, load_user_models, register_user_model


def _write(path: Path, entry: dict) -> Path:
    path.write_text(json.dumps({"default": "m", "models": {"m": entry}}))
    return path


@pytest.mark.parametrize("key", ["family", "backend"])
def test_a_model_s_family_is_read_under_either_key(tmp_path: Path, key: str):
    registry = load_registry(_write(tmp_path / "registry.json", {key: "karlo", "path": "weights/m"}))
    model = registry.models["m"]
    assert (model.family, model.presets, model.path) == ("karlo", "karlo", (tmp_path / "weights/m").resolve())


def test_family_wins_over_an_old_backend_key(tmp_path: Path):
    entry = {"family": "karlo", "backend": "kandinsky22", "path": "m"}
    assert load_registry(_write(tmp_path / "registry.json", entry)).models["m"].family == "karlo"


def test_an_entry_without_a_family_names_the_key_to_add(tmp_path: Path):
    with pytest.raises(ValueError, match=r"^registry model 'm' needs string 'family' and 'path'$"):
        load_registry(_write(tmp_path / "registry.json", {"path": "m"}))


def test_the_shipped_registry_and_newly_registered_models_say_family(tmp_path: Path):
    shipped = json.loads(REGISTRY_PATH.read_text())
    assert all("family" in entry and "backend" not in entry for entry in shipped["models"].values())
    register_user_model(tmp_path, "pulled", {"family": "kandinsky22", "path": "models/pulled"})
    assert load_user_models(tmp_path)["pulled"].family == "kandinsky22"
