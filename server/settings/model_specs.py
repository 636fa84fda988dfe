"""Which models are served: ``NAME=FAMILY:PATH`` entries, bare names of registered models, and the registries.

A model is named in one of two ways wherever models are listed (``--model``,
``EASEL_MODELS``, easel.toml's ``models``, ``--default-model``):

* ``NAME=FAMILY:PATH``: a model directory on disk, served as ``NAME``;
* a bare ``NAME``: a model the shipped registry lists or ``easel pull``
  registered in ``$EASEL_HOME/registry.json`` (``easel serve --model
  kandinsky-2-2``). A known model that was not pulled yet gets one line
  naming ``easel pull NAME``; any other name lists the registered ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines.model_config import FAMILIES
from pipelines.speed import parse_quantize, parse_step_cache
from weights.registry import KNOWN_PULLS, USER_REGISTRY_NAME, Registry, easel_home, load_user_models
from weights.spec import ModelSpec

from .options import ConfigError, Sources, text_list


def parse_model_spec(text: str, source: str = "--model") -> ModelSpec:
    """``NAME=FAMILY:PATH``, e.g. ``easel-tiny=kandinsky22:/tmp/tiny``."""
    name, eq, rest = text.partition("=")
    family, colon, path = rest.partition(":")
    if not (eq and colon and name and family and path):
        raise ConfigError(f"{source}: expected NAME=FAMILY:PATH, got {text!r}")
    return model_spec(name, family, path, source)


def model_spec(name: str, family: str, path: str, source: str, presets: str | None = None) -> ModelSpec:
    if family not in FAMILIES:
        raise ConfigError(f"{source}: model {name!r} has unknown family {family!r} (known: {', '.join(FAMILIES)})")
    return ModelSpec(name, family, Path(path).expanduser().resolve(), presets=presets, source=source)


def registered_models(registry: Registry, registry_path: Path, env: Mapping[str, str]) -> dict[str, ModelSpec]:
    """The shipped registry's models, then those ``easel pull`` registered in ``$EASEL_HOME`` (name -> spec)."""
    home = easel_home(env)
    found = [(m, m.source or f"registry {registry_path}") for m in registry.models.values()]
    found += [(m, m.source or f"registry {home / USER_REGISTRY_NAME}") for m in load_user_models(home).values()]
    return {m.name: replace(m, source=source) for m, source in found}


def not_registered(name: str, source: str, registered: Mapping[str, ModelSpec]) -> ConfigError:
    """The one line for a bare name that no registry lists."""
    if name in KNOWN_PULLS:
        return ConfigError(f"{source}: model {name!r} is not pulled yet: run `easel pull {name}` first")
    have = ", ".join(registered) or "none"
    return ConfigError(
        f"{source}: no registered model {name!r} (registered: {have}; `easel pull --help` lists the models it "
        "can fetch); a model directory is given as NAME=FAMILY:PATH"
    )


def named_model(text: str, source: str, registered: Mapping[str, ModelSpec]) -> ModelSpec:
    """A bare registered name or ``NAME=FAMILY:PATH``."""
    if "=" in text:
        return parse_model_spec(text, source)
    if text not in registered:
        raise not_registered(text, source, registered)
    return registered[text]


def listed_models(
    flags: list[str] | None, sources: Sources, registered: Mapping[str, ModelSpec]
) -> list[ModelSpec] | None:
    """The models the first source that lists any names (``--model``, ``EASEL_MODELS``, the file); None: none does."""
    if flags:
        return [named_model(text, "--model", registered) for text in flags]
    if sources.env.get("EASEL_MODELS"):
        return [named_model(text, "EASEL_MODELS", registered) for text in text_list(sources.env["EASEL_MODELS"])]
    if "models" in sources.file:
        return _file_models(sources.file["models"], sources.file_label, registered)
    return None


def _file_models(entries: Any, label: str, registered: Mapping[str, ModelSpec]) -> list[ModelSpec]:
    """``models = ["NAME", "NAME=FAMILY:PATH"]``, or ``[models.NAME]`` tables (``family`` and ``path``, or neither)."""
    if isinstance(entries, list) and entries and all(isinstance(text, str) for text in entries):
        return [named_model(text, f"{label}: models", registered) for text in entries]
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f'{label}: models must be a list of names (models = ["NAME"]) or [models.NAME] tables')
    base = Path(label).parent
    specs = []
    for name, table in entries.items():
        where = f"{label}: models.{name}"
        if isinstance(table, dict) and not {"family", "path"} & set(table):  # a registered model by its name
            spec = named_model(name, where, registered)
            presets = table.get("presets")
            spec = spec if presets is None else replace(spec, presets=str(presets))
            specs.append(_with_savings(spec, table, where))
            continue
        if not (
            isinstance(table, dict) and isinstance(table.get("family"), str) and isinstance(table.get("path"), str)
        ):
            raise ConfigError(f'{where}: needs family = "..." and path = "..."')
        presets = table.get("presets")
        spec = model_spec(name, table["family"], str(base / Path(table["path"]).expanduser()), where, presets)
        specs.append(_with_savings(spec, table, where))
    return specs


def _with_savings(spec: ModelSpec, table: dict[str, Any], where: str) -> ModelSpec:
    """The entry's own ``quantize`` and ``step_cache``, which beat --quantize and --step-cache for this model."""
    values: dict[str, Any] = {}
    for key, parse in (("quantize", parse_quantize), ("step_cache", parse_step_cache)):
        if key in table:
            try:
                values[key] = parse(table[key])
            except ValueError as error:
                raise ConfigError(f"{where}.{key}: {error}") from None
    return replace(spec, **values, entry=where) if values else spec
