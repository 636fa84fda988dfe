"""Registries: which models Easel serves by default, and the OpenAI names that map to them.

Two files in one format. ``weights/registry.json`` ships with Easel (the
default model and the OpenAI aliases); ``$EASEL_HOME/registry.json`` is the
user's, written by ``easel pull``, and lists the models pulled into
``$EASEL_HOME/models``. Paths in a file are relative to its own directory, so
both work from any location. Nothing here imports model code: ``easel pull``
uses this module while the hub is online.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import ModelSpec

WEIGHTS_DIR = Path(__file__).resolve().parent
REGISTRY_PATH = WEIGHTS_DIR / "registry.json"
USER_REGISTRY_NAME = "registry.json"
# The models `easel pull` can fetch (their recipes are in cli/recipes.py): a model list that names one before it
# is pulled is told to run `easel pull NAME`, without importing the command line.
KNOWN_PULLS = ("kandinsky-2-2", "kandinsky-2-2-inpaint", "karlo")


@dataclass(frozen=True)
class Registry:
    default: str
    models: dict[str, ModelSpec]
    aliases: dict[str, str]  # alias -> model name


def easel_home(env: Mapping[str, str] | None = None) -> Path:
    """``$EASEL_HOME``, else ``$XDG_DATA_HOME/easel``, else ``~/.local/share/easel``: pulled models and the user's files."""
    env = os.environ if env is None else env
    if env.get("EASEL_HOME"):
        return Path(env["EASEL_HOME"]).expanduser()
    data_home = Path(env["XDG_DATA_HOME"]).expanduser() if env.get("XDG_DATA_HOME") else Path.home() / ".local/share"
    return data_home / "easel"


def _model(name: str, entry: object, base: Path) -> ModelSpec:
    # Files written before the key was called "family" say "backend": both are read, "family" is written.
    family = entry.get("family", entry.get("backend")) if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or not isinstance(family, str) or not isinstance(entry.get("path"), str):
        raise ValueError(f"registry model {name!r} needs string 'family' and 'path'")
    return ModelSpec(
        name=name,
        family=family,
        path=(base / entry["path"]).resolve(),
        presets=str(entry.get("presets", family)),
        owned_by=str(entry.get("owned_by", "easel")),
        source=str(entry.get("source", "")),
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_registry(path: Path | str = REGISTRY_PATH) -> Registry:
    """Parse and check the registry: every alias and the default must name a listed model."""
    path = Path(path)
    data = _read(path)
    models = {name: _model(name, entry, path.parent) for name, entry in data.get("models", {}).items()}
    aliases = {str(alias): str(target) for alias, target in data.get("aliases", {}).items()}
    default = str(data.get("default") or next(iter(models), ""))
    for alias, target in aliases.items():
        if target not in models:
            raise ValueError(f"{path}: alias {alias!r} points to unknown model {target!r}")
    if default not in models:
        raise ValueError(f"{path}: default model {default!r} is not listed under 'models'")
    return Registry(default=default, models=models, aliases=aliases)


def load_user_models(home: Path) -> dict[str, ModelSpec]:
    """The models ``easel pull`` registered in ``home`` (none if it has no registry yet)."""
    path = home / USER_REGISTRY_NAME
    if not path.is_file():
        return {}
    return {name: _model(name, entry, home) for name, entry in _read(path).get("models", {}).items()}


def register_user_model(home: Path, name: str, entry: Mapping[str, Any]) -> Path:
    """Add or replace ``name`` in ``home``'s registry (``entry["path"]`` relative to ``home``); returns the file."""
    path = home / USER_REGISTRY_NAME
    data = _read(path) if path.is_file() else {}
    data.setdefault("models", {})[name] = dict(entry)
    home.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)  # a reader never sees half a registry
    return path
