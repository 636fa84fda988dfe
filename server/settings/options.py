"""How a setting is declared and read: one declaration gives a flag, an ``EASEL_*`` variable and an easel.toml key.

A setting is a dataclass field made with :func:`option`. Its value comes
from the command line, else the environment, else the file, else the
declared default; the option's own parser reads text (flags, variables) and
TOML values alike, and a bad value is a :class:`ConfigError` whose one-line
message names the flag, variable or file key it came from.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

MiB = 1024 * 1024
OPTION_KEY = "easel.option"
ERROR_EXIT_CODE = 2  # as argparse: the command was used wrongly
WEBHOOK_SECRET_PREFIX = "whsec_"  # the Standard Webhooks form, as the openai SDK's webhooks.unwrap() reads it
MIN_WEBHOOK_KEY_BYTES = 16

Parse = Callable[[Any], Any]


class ConfigError(ValueError):
    """A setting a person got wrong. The message is one line that names where the value came from."""


@dataclass(frozen=True)
class Option:
    flag: str  # "--max-body-mb"; the variable (EASEL_MAX_BODY_MB) and file key (max_body_mb) follow from it
    parse: Parse  # raw value -> the field's value; ValueError says what is wrong with the value
    help: str
    metavar: str | None = None
    switch: bool = False  # a flag that takes no value (--keep-going)
    repeat: bool = False  # a flag given once per value (--webhook-url A --webhook-url B); parse gets the list

    @property
    def key(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return "EASEL_" + self.key.upper()


def option(
    default: Any,
    flag: str,
    parse: Parse,
    help: str,
    *,
    metavar: str | None = None,
    switch: bool = False,
    repeat: bool = False,
    secret: bool = False,
):
    """A settings field that is also a flag, a variable and a file key (see the module docstring).

    ``secret`` keeps the value out of the settings' repr, which ends up in logs and tracebacks.
    """
    option_ = Option(flag, parse, help, metavar, switch, repeat)
    return field(default=default, repr=not secret, metadata={OPTION_KEY: option_})


def declared_options(cls: type) -> dict[str, Option]:
    """Field name -> :class:`Option`, for every field of ``cls`` made with :func:`option`."""
    return {f.name: f.metadata[OPTION_KEY] for f in fields(cls) if OPTION_KEY in f.metadata}


def fail(error: ConfigError) -> NoReturn:
    """Print the error as one line and exit with status 2 (before anything has started)."""
    print(f"easel: error: {error}", file=sys.stderr)
    raise SystemExit(ERROR_EXIT_CODE)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at ``--help`` (not the whole usage text)."""

    def error(self, message: str) -> NoReturn:
        fail(ConfigError(f"{message} (see {self.prog} --help)"))


def add_option_flags(parser: argparse.ArgumentParser, options: Mapping[str, Option]) -> None:
    """One flag per option. Flags not given are absent from the namespace, so the other sources can apply."""
    for name, spec in options.items():
        if spec.switch:
            parser.add_argument(spec.flag, dest=name, action="store_true", default=argparse.SUPPRESS, help=spec.help)
        elif spec.repeat:
            parser.add_argument(
                spec.flag, dest=name, action="append", metavar=spec.metavar, default=argparse.SUPPRESS, help=spec.help
            )
        else:
            parser.add_argument(spec.flag, dest=name, metavar=spec.metavar, default=argparse.SUPPRESS, help=spec.help)


@dataclass(frozen=True)
class Sources:
    """Where settings come from, highest precedence first: flags, the environment, the file."""

    flags: Mapping[str, Any]  # field name -> value given on the command line
    env: Mapping[str, str]
    file: Mapping[str, Any]  # the file's top-level keys
    file_label: str = "easel.toml"  # the file's path, for messages

    def raw(self, name: str, spec: Option) -> tuple[Any, str] | None:
        """The raw value and its label (``--port``, ``EASEL_PORT``, ``easel.toml: port``), or None if unset."""
        if name in self.flags:
            return self.flags[name], spec.flag
        if self.env.get(spec.env, "") != "":
            return self.env[spec.env], spec.env
        if spec.key in self.file:
            return self.file[spec.key], f"{self.file_label}: {spec.key}"
        return None


def read_options(options: Mapping[str, Option], sources: Sources) -> tuple[dict[str, Any], dict[str, str]]:
    """Parsed values of the options that are set anywhere, and where each came from."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, spec in options.items():
        found = sources.raw(name, spec)
        if found is None:
            continue
        raw, label = found
        try:
            values[name] = spec.parse(raw)
        except ValueError as error:
            raise ConfigError(f"{label}: {error}") from None
        origins[name] = label
    return values, origins


# -- value parsers: each takes command-line text or a TOML value ---------------------------------


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def integer(low: int, high: int | None = None, *, what: str = "") -> Parse:
    """A whole number in [low, high]; ``what`` names the kind of number in the message (``a port``)."""

    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{value!r} is not an integer")
        try:
            number = int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        if number < low or (high is not None and number > high):
            span = f"{low}-{high}" if high is not None else f"at least {low}"
            raise ValueError(f"{number} is {'not ' + what if what else 'out of range'} (must be {span})")
        return number

    return parse


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a number")
    try:
        parsed = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number") from None
    if not math.isfinite(parsed):
        raise ValueError(f"{value!r} is not a finite number")
    return parsed


def positive_number(value: Any) -> float:
    parsed = number(value)
    if parsed <= 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return parsed


def non_negative_number(value: Any) -> float:
    parsed = number(value)
    if parsed < 0:
        raise ValueError(f"must not be negative, got {value!r}")
    return parsed


def scaled(unit: float) -> Parse:
    """A positive number of ``unit`` (MiB, megapixels) as a whole count, at least 1."""

    def parse(value: Any) -> int:
        return max(1, int(positive_number(value) * unit))

    return parse


def choice(*names: str) -> Parse:
    def parse(value: Any) -> str:
        word = text(value).lower()
        if word not in names:
            raise ValueError(f"{value!r} is not one of {', '.join(names)}")
        return word

    return parse


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def path(value: Any) -> Path:
    return Path(text(value)).expanduser()


def base_url(value: Any) -> str:
    url = text(value).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return url


def http_urls(value: Any) -> tuple[str, ...]:
    """One or more absolute http(s) URLs: a list (repeated flag, TOML) or comma-separated text (a variable)."""
    urls = text_tuple(value)
    if not urls:
        raise ValueError("expected at least one URL")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
    return urls


def webhook_secret(value: Any) -> str:
    """A Standard Webhooks secret: ``whsec_`` then base64 of at least 16 bytes. Messages never repeat it."""
    secret = text(value)
    encoded = secret.removeprefix(WEBHOOK_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        key = b""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX) or len(key) < MIN_WEBHOOK_KEY_BYTES:
        raise ValueError(
            f"not a webhook secret: expected {WEBHOOK_SECRET_PREFIX} followed by the base64 of at least "
            f"{MIN_WEBHOOK_KEY_BYTES} bytes"
        )
    return secret


def text_tuple(value: Any) -> tuple[str, ...]:
    return tuple(text_list(value))


def text_list(value: Any) -> list[str]:
    """A TOML list of strings, or comma-separated text (variables)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return [item.strip() for item in items if item.strip()]


GiB = 1024**3


@dataclass(frozen=True)
class MemoryAmount:
    """An amount of memory: fixed bytes, or a fraction of what a device has (``--memory-budget 0.8``)."""

    fixed_bytes: int | None = None
    fraction: float | None = None

    def of(self, total: int) -> int:
        """Bytes, given the device's total memory."""
        return self.fixed_bytes if self.fixed_bytes is not None else int(total * (self.fraction or 0.0))

    def __str__(self) -> str:
        if self.fixed_bytes is not None:
            return f"{self.fixed_bytes / GiB:g} GiB"
        return f"{(self.fraction or 0.0) * 100:g}%"


def memory_amount(value: Any) -> MemoryAmount:
    """GiB (``12``, ``12GiB``), or a fraction of the device's memory (``0.8``, ``80%``); a number up to 1 is a
    fraction, ``0`` is none."""
    raw = value.strip().lower() if isinstance(value, str) else value
    if isinstance(raw, str) and raw.endswith("%"):
        share = non_negative_number(raw[:-1]) / 100
        if share > 1:
            raise ValueError(f"{value!r} is more than 100%")
        return MemoryAmount(fraction=share)
    if isinstance(raw, str) and raw.endswith(("gib", "gb", "g")):
        return MemoryAmount(fixed_bytes=int(non_negative_number(raw.rstrip("gib").rstrip("b")) * GiB))
    amount = non_negative_number(raw)
    return MemoryAmount(fraction=amount) if 0 < amount <= 1 else MemoryAmount(fixed_bytes=int(amount * GiB))
