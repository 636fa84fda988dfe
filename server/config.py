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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.base import FAMILIES, OPTIMIZATIONS, SpeedOptions
from weights.registry import REGISTRY_PATH, load_registry

DEFAULT_MAX_BODY_MB = 50.0
DEFAULT_MAX_UPLOAD_MB = 50.0  # per uploaded image (edits, variations); see server.uploads
DEFAULT_MAX_UPLOAD_MEGAPIXELS = 40.0


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
    optimize: SpeedOptions = SpeedOptions()  # speed settings applied at load (README "Fast on a GPU")
    family_dtypes: Mapping[str, str] = field(default_factory=dict)  # family -> dtype, overriding ``dtype``

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
    _add_speed_options(parser, default)
    return parser


def _add_speed_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--optimize",
        default=default("OPTIMIZE", "auto"),
        help=f"speed settings: auto (the device's defaults), none, or comma-separated {', '.join(OPTIMIZATIONS)}",
    )
    parser.add_argument(
        "--family-dtype",
        action="append",
        metavar="FAMILY=DTYPE",
        help="dtype for one model family, over --dtype (repeatable; env EASEL_FAMILY_DTYPES, comma-separated)",
    )
    parser.add_argument(
        "--compile-cache-dir",
        default=default("COMPILE_CACHE_DIR"),
        help="torch.compile's persistent cache (default ~/.cache/easel/torch-compile)",
    )
    parser.add_argument(
        "--compile-warmup-batches",
        default=default("COMPILE_WARMUP_BATCHES", "1,2"),
        help="with compile: images per job compiled ahead at load, comma-separated (default 1,2)",
    )


def parse_family_dtypes(texts: Sequence[str]) -> dict[str, str]:
    """``FAMILY=DTYPE`` items, e.g. ``karlo=float16``; the dtype itself is checked when the model loads."""
    chosen = {}
    for text in texts:
        family, eq, dtype = text.partition("=")
        if not (eq and dtype) or family not in FAMILIES:
            raise ValueError(f"expected FAMILY=DTYPE with FAMILY one of {', '.join(FAMILIES)}, got {text!r}")
        chosen[family] = dtype
    return chosen


def parse_speed_options(args: argparse.Namespace) -> SpeedOptions:
    try:
        batches = tuple(int(item) for item in _split(args.compile_warmup_batches))
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        raise ValueError(f"--compile-warmup-batches: expected positive integers, got {args.compile_warmup_batches!r}")
    return SpeedOptions(SpeedOptions.parse_enabled(args.optimize), args.compile_cache_dir, batches)


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
            optimize=parse_speed_options(args),
            family_dtypes=parse_family_dtypes(args.family_dtype or _split(env.get("EASEL_FAMILY_DTYPES"))),
        )
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
