"""``weights/registry.json``: which models Easel serves by default, and the OpenAI names that map to them.

Paths in the file are relative to the ``weights/`` directory, so the registry
works from any checkout location.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
REGISTRY_PATH = WEIGHTS_DIR / "registry.json"


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    backend: str  # model family: "kandinsky22" | "karlo"
    path: Path  # absolute
    presets: str  # key into pipelines.presets (a family name)
    owned_by: str


@dataclass(frozen=True)
class Registry:
    default: str
    models: dict[str, RegisteredModel]
    aliases: dict[str, str]  # alias -> model name


def _model(name: str, entry: object, base: Path) -> RegisteredModel:
    if not isinstance(entry, dict) or not isinstance(entry.get("backend"), str) or not isinstance(entry.get("path"), str):
        raise ValueError(f"registry model {name!r} needs string 'backend' and 'path'")
    return RegisteredModel(
        name=name,
        backend=entry["backend"],
        path=(base / entry["path"]).resolve(),
        presets=str(entry.get("presets", entry["backend"])),
        owned_by=str(entry.get("owned_by", "easel")),
    )


def load_registry(path: Path | str = REGISTRY_PATH) -> Registry:
    """Parse and check the registry: every alias and the default must name a listed model."""
    path = Path(path)
    data = json.loads(path.read_text())
    models = {name: _model(name, entry, path.parent) for name, entry in data.get("models", {}).items()}
    aliases = {str(alias): str(target) for alias, target in data.get("aliases", {}).items()}
    default = str(data.get("default") or next(iter(models), ""))
    for alias, target in aliases.items():
        if target not in models:
            raise ValueError(f"{path}: alias {alias!r} points to unknown model {target!r}")
    if default not in models:
        raise ValueError(f"{path}: default model {default!r} is not listed under 'models'")
    return Registry(default=default, models=models, aliases=aliases)
