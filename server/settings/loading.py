"""Reading the settings: flags, then ``EASEL_*`` variables, then the file, then the declared defaults.

The options are declared on :class:`~server.settings.config.Settings`; the models, aliases and API keys, which
add up or pick one source as a set, are read here (see :mod:`server.settings.config` for the rules).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from weights.registry import KNOWN_PULLS, REGISTRY_PATH, load_registry

from . import options as opt
from .config import OPTIONS, Settings
from .config_file import CONFIG_FILE_NAME, read_config_file
from .model_specs import ModelSpec, listed_models, not_registered, registered_models
from .options import ConfigError
from .ray_serve import RayServeSettings


def parse_alias(text: str, source: str = "--alias") -> tuple[str, str]:
    """``ALIAS=MODEL``, e.g. ``dall-e-3=easel-tiny``."""
    alias, eq, target = text.partition("=")
    if not (eq and alias and target):
        raise ConfigError(f"{source}: expected ALIAS=MODEL, got {text!r}")
    return alias, target


def build_parser(prog: str = "easel serve") -> opt.OneLineParser:
    parser = opt.OneLineParser(prog=prog, description="OpenAI-compatible image API on prior+decoder diffusion models.")
    parser.add_argument(
        "--config", metavar="FILE", help=f"settings file (env EASEL_CONFIG; default $EASEL_HOME/{CONFIG_FILE_NAME})"
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="model to serve: a pulled model's name, or NAME=FAMILY:PATH (repeatable; env EASEL_MODELS)",
    )
    parser.add_argument(
        "--alias", action="append", metavar="ALIAS=MODEL", help="extra model name (repeatable; env EASEL_ALIASES)"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accepted bearer key (repeatable; env EASEL_API_KEYS); none: no auth",
    )
    parser.add_argument("--registry", metavar="FILE", help="the shipped registry file (env EASEL_REGISTRY)")
    opt.add_option_flags(parser, OPTIONS)
    return parser


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the command line, the environment and the file; a mistake exits with one line (status 2)."""
    try:
        return read_settings(argv, env)
    except ConfigError as error:
        opt.fail(error)


def read_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """As :func:`load_settings`, but a mistake raises :class:`ConfigError`."""
    env = os.environ if env is None else env
    args = vars(build_parser().parse_args(argv))
    file, file_label = read_config_file(args.pop("config"), env)
    sources = opt.Sources({name: args[name] for name in OPTIONS if name in args}, env, file, file_label)
    values, origins = opt.read_options(OPTIONS, sources)
    models, registry_default, registry_aliases, registered = _models(args, sources)
    default = values.get("default_model") or registry_default or models[0].name
    if default not in {model.name for model in models} and default in registered:
        models.append(registered[default])  # --default-model names a registered model: it is served too
    if default not in {model.name for model in models} and default in KNOWN_PULLS:
        raise not_registered(default, origins.get("default_model", "default model"), registered)
    if default not in {model.name for model in models}:
        served = ", ".join(model.name for model in models)
        raise ConfigError(
            f"{origins.get('default_model', 'default model')}: {default!r} is not a served model ({served})"
        )
    names = {model.name for model in models}
    aliases = {alias: default for alias in registry_aliases if alias not in names}
    aliases.update(_aliases(args, sources))
    ray_options = [origins[f.name] for f in fields(RayServeSettings) if f.name in origins]
    if ray_options and not values.get("use_ray"):  # it would be silently ignored
        raise ConfigError(f"{ray_options[0]}: needs --ray")
    if values.get("use_ray") and "preload" in origins:  # it would be silently replaced
        raise ConfigError(
            f"{origins['preload']}: not with --ray, where the models loaded at start are those whose deployment "
            "keeps a replica (--min-replicas 1 or more, or --replicas)"
        )
    _check_webhooks(values, origins)
    keys = [*(args["api_key"] or []), *_listed(sources, "EASEL_API_KEYS", "api_keys")]
    values["default_model"] = default
    try:
        return Settings(
            models=tuple(models), aliases=aliases, api_keys=tuple(dict.fromkeys(keys)), origins=origins, **values
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


WEBHOOK_TUNING = ("webhook_secret", "webhook_timeout_seconds", "webhook_attempts")


def _check_webhooks(values: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    """Events are always signed, and a webhook setting without a URL would be silently ignored."""
    if values.get("webhook_urls") and not values.get("webhook_secret"):
        raise ConfigError(f"{origins['webhook_urls']}: needs --webhook-secret (events are always signed)")
    tuning = [origins[name] for name in WEBHOOK_TUNING if name in origins]
    if tuning and not values.get("webhook_urls"):
        raise ConfigError(f"{tuning[0]}: needs --webhook-url")


def _listed(sources: opt.Sources, variable: str, key: str) -> list[str]:
    """A list from a comma-separated variable and from the file, in that order."""
    found = opt.text_list(sources.env.get(variable, ""))
    if key in sources.file:
        try:
            found += opt.text_list(sources.file[key])
        except ValueError as error:
            raise ConfigError(f"{sources.file_label}: {key}: {error}") from None
    return found


def _models(args: dict[str, Any], sources: opt.Sources) -> tuple[list[ModelSpec], str | None, list[str], dict]:
    """The served models, the registry's default (None unless they came from it), its aliases, all registered."""
    registry_path = Path(args["registry"] or sources.env.get("EASEL_REGISTRY") or REGISTRY_PATH)
    registry = load_registry(registry_path)
    registered = registered_models(registry, registry_path, sources.env)
    listed = listed_models(args["model"], sources, registered)
    if listed is not None:
        return listed, None, list(registry.aliases), registered
    return list(registered.values()), registry.default, list(registry.aliases), registered


def _aliases(args: dict[str, Any], sources: opt.Sources) -> dict[str, str]:
    """Aliases from the file, then EASEL_ALIASES, then --alias (a later one wins for the same name)."""
    aliases: dict[str, str] = {}
    table = sources.file.get("aliases", {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise ConfigError(f"{sources.file_label}: [aliases] must map names to model names")
    aliases.update(table)
    for text in opt.text_list(sources.env.get("EASEL_ALIASES", "")):
        aliases.__setitem__(*parse_alias(text, "EASEL_ALIASES"))
    for text in args["alias"] or []:
        aliases.__setitem__(*parse_alias(text))
    return aliases
