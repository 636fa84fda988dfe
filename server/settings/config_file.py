"""The settings file: ``--config FILE``, ``EASEL_CONFIG``, else ``$EASEL_HOME/easel.toml`` if it exists (TOML)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from weights.registry import easel_home

from .config import OPTIONS
from .options import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_FILE_NAME = "easel.toml"
FILE_SECTIONS = ("models", "aliases", "api_keys")  # file keys that are not options


def read_config_file(flag: str | None, env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The file's keys and its path; no file is fine unless one was named."""
    named = flag or env.get("EASEL_CONFIG") or None
    label = "--config" if flag else "EASEL_CONFIG"
    path = Path(named).expanduser() if named else easel_home(env) / CONFIG_FILE_NAME
    if not path.is_file():
        if named:
            raise ConfigError(f"{label}: no file at {path}")
        return {}, str(path)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    unknown = sorted(set(data) - {spec.key for spec in OPTIONS.values()} - set(FILE_SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (see easel serve --help)")
    return data, str(path)
