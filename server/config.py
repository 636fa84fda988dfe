"""Server settings, from the command line with ``EASEL_*`` environment variables as defaults.

Every option has an environment variable (``--url-ttl-seconds`` ->
``EASEL_URL_TTL_SECONDS``); the command line wins. API keys are the union of
``--api-key`` options and the comma-separated ``EASEL_API_KEYS``.

Models come from ``weights/registry.json`` unless ``--model`` is given. With
``--model``, the registry's OpenAI aliases (``dall-e-3``, ``gpt-image-1``, ...)
are kept but point at the default model (the first ``--model`` unless
``--default-model`` says otherwise); ``--alias`` adds or overrides aliases.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from weights.registry import REGISTRY_PATH, load_registry

DEFAULT_MAX_BODY_MB = 50.0
DEFAULT_MAX_UPLOAD_MB = 50.0  # per uploaded image (edits, variations); see server.uploads
DEFAULT_MAX_UPLOAD_MEGAPIXELS = 40.0
DEFAULT_MAX_DECODE_MB = 48.0  # memory one upload's pixels may take as decoded; see server.serving.decoding
DEFAULT_MAX_CONCURRENT_DECODES = 2
DEFAULT_MAX_CONNECTIONS = 128
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_BODY_TIMEOUT_SECONDS = 60.0
DEFAULT_KEEP_ALIVE_SECONDS = 5.0


@dataclass(frozen=True)
class ModelSpec:
    """One model to load: a name clients use, a backend family, and a weights directory."""

    name: str
    family: str
    path: Path
    presets: str | None = None  # a quality table in pipelines.presets; None: the family's
    owned_by: str = "easel"


@dataclass(frozen=True)
class Settings:
    models: tuple[ModelSpec, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    default_model: str | None = None  # None: the first model
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    public_base_url: str | None = None  # e.g. https://images.example.com; else taken from each request
    url_ttl_seconds: float = 3600.0
    queue_size: int = 16  # jobs waiting per model, not counting the one running
    device: str | None = None  # None: the loader's choice (cuda if available)
    dtype: str | None = None
    max_body_bytes: int = int(DEFAULT_MAX_BODY_MB * 1024 * 1024)
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_upload_pixels: int = int(DEFAULT_MAX_UPLOAD_MEGAPIXELS * 1_000_000)
    image_dir: Path | None = None  # where URL images live; None: a temporary directory per run
    log_level: str = "info"
    workers: int | None = None  # worker slots per device; None: by device (engine.base.BatchPolicy)
    max_batch_images: int | None = None  # images one pipeline call may merge from several requests; None: by device
    batch_wait_ms: float | None = None  # how long a call may wait for companions; None: by device
    shutdown_timeout: float = 30.0  # seconds to finish queued and running jobs after SIGTERM/SIGINT
    cors_allow_origins: tuple[str, ...] = ()  # browser origins allowed to call the API ("*": any); none: no CORS
    log_format: str = "text"  # "text" or "json" (server.logs)
    sse_keepalive_seconds: float = 15.0  # a comment line on a stream idle this long; 0 or less: never
    # Hardening (README, "Limits"): decoding and connection limits.
    max_decode_bytes: int = int(DEFAULT_MAX_DECODE_MB * 1024 * 1024)
    max_concurrent_decodes: int = DEFAULT_MAX_CONCURRENT_DECODES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_seconds: float = DEFAULT_HEADER_TIMEOUT_SECONDS
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS
    keep_alive_seconds: float = DEFAULT_KEEP_ALIVE_SECONDS

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.models]
        if not names:
            raise ValueError("at least one model is required")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate model names in {names}")
        for alias, target in self.aliases.items():
            if alias in names:
                raise ValueError(f"alias {alias!r} clashes with a model of the same name")
            if target not in names:
                raise ValueError(f"alias {alias!r} points to {target!r}, which is not a configured model")
        if self.default_model is not None and self.default_model not in names:
            raise ValueError(f"default model {self.default_model!r} is not a configured model")
        if self.url_ttl_seconds <= 0 or self.queue_size < 1 or self.max_body_bytes < 1:
            raise ValueError("url_ttl_seconds, queue_size and max_body_bytes must be positive")
        if self.max_upload_bytes < 1 or self.max_upload_pixels < 1:
            raise ValueError("max_upload_bytes and max_upload_pixels must be positive")
        if (self.workers is not None and self.workers < 1) or (
            self.max_batch_images is not None and self.max_batch_images < 1
        ):
            raise ValueError("--workers and --max-batch-images must be at least 1")
        if (self.batch_wait_ms is not None and self.batch_wait_ms < 0) or self.shutdown_timeout < 0:
            raise ValueError("--batch-wait-ms and --shutdown-timeout must not be negative")
        self._check_hardening_limits()

    def _check_hardening_limits(self) -> None:
        if self.max_decode_bytes < 1 or self.max_concurrent_decodes < 1 or self.max_connections < 1:
            raise ValueError("max_decode_bytes, max_concurrent_decodes and max_connections must be positive")
        if min(self.header_timeout_seconds, self.body_timeout_seconds, self.keep_alive_seconds) <= 0:
            raise ValueError("header_timeout_seconds, body_timeout_seconds and keep_alive_seconds must be positive")

    @property
    def default_model_name(self) -> str:
        return self.default_model or self.models[0].name


def parse_model_spec(text: str) -> ModelSpec:
    """``NAME=FAMILY:PATH``, e.g. ``easel-tiny=kandinsky22:/tmp/tiny``."""
    name, eq, rest = text.partition("=")
    family, colon, path = rest.partition(":")
    if not (eq and colon and name and family and path):
        raise ValueError(f"expected NAME=FAMILY:PATH, got {text!r}")
    return ModelSpec(name=name, family=family, path=Path(path).expanduser().resolve())


def parse_alias(text: str) -> tuple[str, str]:
    """``ALIAS=MODEL``, e.g. ``dall-e-3=easel-tiny``."""
    alias, eq, target = text.partition("=")
    if not (eq and alias and target):
        raise ValueError(f"expected ALIAS=MODEL, got {text!r}")
    return alias, target


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    # Defaults are strings, as on the command line: argparse converts them with the option's type.
    def default(name: str, fallback: str | None = None) -> str | None:
        return env.get(f"EASEL_{name}", fallback)

    parser = argparse.ArgumentParser(
        prog="easel", description="OpenAI-compatible image API on prior+decoder diffusion models."
    )
    parser.add_argument("--host", default=default("HOST", "127.0.0.1"), help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default("PORT", "8000"), help="port (default 8000)")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME=FAMILY:PATH",
        help="model to serve (repeatable; env EASEL_MODELS, comma-separated); default: weights/registry.json",
    )
    parser.add_argument(
        "--alias", action="append", metavar="ALIAS=MODEL", help="extra model name (repeatable; env EASEL_ALIASES)"
    )
    parser.add_argument(
        "--default-model", default=default("DEFAULT_MODEL"), help="model used when a request names none"
    )
    parser.add_argument("--registry", type=Path, default=default("REGISTRY", str(REGISTRY_PATH)), help="registry file")
    parser.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="accepted bearer key (repeatable; also EASEL_API_KEYS); none: no auth",
    )
    parser.add_argument(
        "--public-base-url",
        default=default("PUBLIC_BASE_URL"),
        help="base of image URLs (default: the request's scheme and host)",
    )
    parser.add_argument(
        "--url-ttl-seconds",
        type=float,
        default=default("URL_TTL_SECONDS", "3600"),
        help="lifetime of image URLs (default 3600)",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=default("QUEUE_SIZE", "16"),
        help="jobs waiting per model before 429 (default 16)",
    )
    parser.add_argument(
        "--device", default=default("DEVICE"), help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--dtype", default=default("DTYPE"), help="torch dtype (default: the loader's choice for the device)"
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=default("MAX_BODY_MB", str(DEFAULT_MAX_BODY_MB)),
        help="request body limit in MiB (default 50)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=default("MAX_UPLOAD_MB", str(DEFAULT_MAX_UPLOAD_MB)),
        help="limit per uploaded image in MiB (default 50)",
    )
    parser.add_argument(
        "--max-upload-megapixels",
        type=float,
        default=default("MAX_UPLOAD_MEGAPIXELS", str(DEFAULT_MAX_UPLOAD_MEGAPIXELS)),
        help="limit per uploaded image in megapixels (default 40)",
    )
    parser.add_argument(
        "--image-dir",
        type=Path,
        default=default("IMAGE_DIR"),
        help="directory for URL images (default: a temporary one)",
    )
    parser.add_argument(
        "--log-level",
        default=str(default("LOG_LEVEL", "info")).lower(),
        choices=["debug", "info", "warning", "error"],
        help="default info",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default("WORKERS"),
        help="worker slots per device (default: 2 on a CPU, which split the cores when busy; 1 per GPU)",
    )
    parser.add_argument(
        "--max-batch-images",
        type=int,
        default=default("MAX_BATCH_IMAGES"),
        help="images one pipeline call may merge from several requests (default: 8 on a CPU, 16 on a GPU; "
        "1 keeps every request's images byte-identical to it alone)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=default("BATCH_WAIT_MS"),
        help="how long a call may wait for companions when clients send in parallel (default: 30 on CPU, 10 on GPU)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=default("SHUTDOWN_TIMEOUT", "30"),
        help="seconds to finish queued and running jobs after SIGTERM or SIGINT; the rest are cancelled (default 30)",
    )
    parser.add_argument(
        "--cors-allow-origins",
        default=default("CORS_ALLOW_ORIGINS", ""),
        metavar="ORIGIN,...",
        help="browser origins allowed to call the API, comma-separated, or * (default: none, no CORS headers)",
    )
    parser.add_argument(
        "--log-format",
        default=str(default("LOG_FORMAT", "text")).lower(),
        choices=["text", "json"],
        help="text lines or one JSON object a line (default text)",
    )
    parser.add_argument(
        "--sse-keepalive-seconds",
        type=float,
        default=default("SSE_KEEPALIVE_SECONDS", "15"),
        help="send an SSE comment line when a stream has been idle this long; 0: never (default 15)",
    )
    _add_hardening_options(parser, default)
    return parser


def _add_hardening_options(parser: argparse.ArgumentParser, default: Callable[..., str | None]) -> None:
    options = (
        ("--max-decode-mb", float, "MAX_DECODE_MB", DEFAULT_MAX_DECODE_MB,
         "memory one uploaded image may take once decoded, in MiB"),
        ("--max-concurrent-decodes", int, "MAX_CONCURRENT_DECODES", DEFAULT_MAX_CONCURRENT_DECODES,
         "uploads decoded at once; the others wait"),
        ("--max-connections", int, "MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS,
         "open connections; one more is answered 503"),
        ("--header-timeout-seconds", float, "HEADER_TIMEOUT_SECONDS", DEFAULT_HEADER_TIMEOUT_SECONDS,
         "a request's headers must arrive within this many seconds of its first byte (else 408)"),
        ("--body-timeout-seconds", float, "BODY_TIMEOUT_SECONDS", DEFAULT_BODY_TIMEOUT_SECONDS,
         "a request's body must arrive within this many seconds of its headers (else 408)"),
        ("--keep-alive-seconds", float, "KEEP_ALIVE_SECONDS", DEFAULT_KEEP_ALIVE_SECONDS,
         "an idle keep-alive connection is closed after this many seconds"),
    )  # fmt: skip
    for flag, kind, env_name, fallback, text in options:
        shown = int(fallback) if kind is int or float(fallback).is_integer() else fallback
        parser.add_argument(flag, type=kind, default=default(env_name, str(shown)), help=f"{text} (default {shown})")


def _models_and_aliases(
    args: argparse.Namespace, env: Mapping[str, str]
) -> tuple[list[ModelSpec], dict[str, str], str]:
    registry = load_registry(args.registry)
    model_texts = args.model or _split(env.get("EASEL_MODELS"))
    if model_texts:
        models = [parse_model_spec(text) for text in model_texts]
        default_model = args.default_model or models[0].name
        aliases = {alias: default_model for alias in registry.aliases if alias not in {m.name for m in models}}
    else:
        models = [
            ModelSpec(name=m.name, family=m.backend, path=m.path, presets=m.presets, owned_by=m.owned_by)
            for m in registry.models.values()
        ]
        default_model = args.default_model or registry.default
        aliases = dict(registry.aliases)
    for text in args.alias or _split(env.get("EASEL_ALIASES")):
        alias, target = parse_alias(text)
        aliases[alias] = target
    return models, aliases, default_model


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    parser = build_parser(env)
    args = parser.parse_args(argv)
    try:
        models, aliases, default_model = _models_and_aliases(args, env)
        keys = tuple(dict.fromkeys([*(args.api_key or []), *_split(env.get("EASEL_API_KEYS"))]))
        return Settings(
            models=tuple(models),
            aliases=aliases,
            default_model=default_model,
            host=args.host,
            port=args.port,
            api_keys=keys,
            public_base_url=args.public_base_url.rstrip("/") if args.public_base_url else None,
            url_ttl_seconds=args.url_ttl_seconds,
            queue_size=args.queue_size,
            device=args.device,
            dtype=args.dtype,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
            max_upload_pixels=int(args.max_upload_megapixels * 1_000_000),
            image_dir=Path(args.image_dir) if args.image_dir else None,
            log_level=str(args.log_level).lower(),
            workers=args.workers,
            max_batch_images=args.max_batch_images,
            batch_wait_ms=args.batch_wait_ms,
            shutdown_timeout=args.shutdown_timeout,
            cors_allow_origins=tuple(_split(args.cors_allow_origins)),
            log_format=args.log_format,
            sse_keepalive_seconds=args.sse_keepalive_seconds,
            max_decode_bytes=int(args.max_decode_mb * 1024 * 1024),
            max_concurrent_decodes=args.max_concurrent_decodes,
            max_connections=args.max_connections,
            header_timeout_seconds=args.header_timeout_seconds,
            body_timeout_seconds=args.body_timeout_seconds,
            keep_alive_seconds=args.keep_alive_seconds,
        )
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
