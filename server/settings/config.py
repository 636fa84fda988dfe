"""Server settings: every option declared once, on :class:`Settings`, and read from four places.

Command-line flags beat ``EASEL_*`` environment variables, which beat the
file (``--config FILE``, ``EASEL_CONFIG``, else ``$EASEL_HOME/easel.toml`` if
it exists), which beats the declared default. Adding an option is one
``option(...)`` field below: its flag, variable and file key follow from its
name (:mod:`server.settings.options`); :mod:`server.settings.loading` reads
them. The reference is docs/reference/options.md, which ``scripts/gen_docs.py``
writes from these declarations, and (docs/running.md, "Configuration").

Models are the exception, as a set: the first of ``--model``,
``EASEL_MODELS`` and the file's ``[models]`` that lists any decides which
are served; with none, the shipped registry's models and those ``easel pull``
registered in ``$EASEL_HOME``. Each source takes bare names of registered
models as well as ``NAME=FAMILY:PATH`` (:mod:`server.settings.model_specs`); a
``--default-model`` that names a registered model serves it too. The
registry's OpenAI aliases always point at the default model; aliases and API
keys add up across the sources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from pipelines import speed

from . import options as opt
from .model_specs import ModelSpec
from .options import MiB, option
from .ray_serve import RayServeSettings

RAY = RayServeSettings()  # the Ray options' defaults, declared once, there

DEFAULT_MAX_BODY_MB = 50.0
DEFAULT_MAX_UPLOAD_MB = 50.0  # per uploaded image (edits, variations); see server.serving.uploads
DEFAULT_MAX_UPLOAD_MEGAPIXELS = 40.0
DEFAULT_MAX_DECODE_MB = 48.0  # memory one upload's pixels may take as decoded; see server.serving.decoding
DEFAULT_MAX_REQUEST_MB = 1024.0  # memory one answer may take to encode and send; see server.serving.files
DEFAULT_MEMORY_BUDGET_FRACTION = 0.8  # headroom for the OS, the server and other processes
DEFAULT_HOST_BUDGET_FRACTION = 0.5  # of the host's RAM, for models kept warm off the GPU


@dataclass(frozen=True)
class Settings:
    models: tuple[ModelSpec, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # secrets: kept out of logs and tracebacks
    # -- options: a flag, an EASEL_* variable and a file key each --------------------------------------
    default_model: str | None = option(None, "--default-model", opt.text, "model used when a request names none")
    host: str = option("127.0.0.1", "--host", opt.text, "bind address (default 127.0.0.1)")
    port: int = option(8000, "--port", opt.integer(1, 65535, what="a port number"), "port (default 8000)")
    public_base_url: str | None = option(
        None, "--public-base-url", opt.base_url, "base of image URLs (default: the request's scheme and host)"
    )
    allowed_hosts: tuple[str, ...] = option(
        (),
        "--allowed-hosts",
        opt.text_tuple,
        "Host names answered, or * (default: the loopback names when bound to loopback, else any); others: 421",
    )
    url_ttl_seconds: float = option(3600.0, "--url-ttl-seconds", opt.positive_number, "lifetime of image URLs (3600)")
    queue_size: int = option(16, "--queue-size", opt.integer(1), "jobs waiting per model before 429 (default 16)")
    device: str | None = option(None, "--device", opt.text, "torch device (default: cuda, else mps, else cpu)")
    dtype: str | None = option(None, "--dtype", opt.text, "torch dtype (default: the loader's choice for the device)")
    max_body_bytes: int = option(
        int(DEFAULT_MAX_BODY_MB * MiB), "--max-body-mb", opt.scaled(MiB), "request body limit in MiB (default 50)"
    )
    max_upload_bytes: int = option(
        int(DEFAULT_MAX_UPLOAD_MB * MiB), "--max-upload-mb", opt.scaled(MiB), "limit per uploaded image in MiB (50)"
    )
    max_upload_pixels: int = option(
        int(DEFAULT_MAX_UPLOAD_MEGAPIXELS * 1_000_000),
        "--max-upload-megapixels",
        opt.scaled(1_000_000),
        "limit per uploaded image in megapixels (default 40)",
    )
    image_dir: Path | None = option(
        None, "--image-dir", opt.path, "directory for URL images (default: a temporary one)"
    )
    data_dir: Path | None = option(
        None, "--data-dir", opt.path, "files and batches of the Files and Batch APIs (default: $EASEL_HOME/data)"
    )
    runner_stall_seconds: float = option(
        1800.0,
        "--runner-stall-seconds",
        opt.non_negative_number,
        "give the batch runner lease up after its batch lines made no progress this long (1800; 0: never)",
    )
    log_level: str = option(
        "info", "--log-level", opt.choice("debug", "info", "warning", "error"), "debug, info, warning or error (info)"
    )
    keep_going: bool = option(
        False, "--keep-going", opt.boolean, "keep serving the other models when one fails to load", switch=True
    )
    log_format: str = option("text", "--log-format", opt.choice("text", "json"), "text, or one JSON object a line")
    cors_allow_origins: tuple[str, ...] = option(
        (), "--cors-allow-origins", opt.text_tuple, "browser origins allowed to call the API, or * (default none)"
    )
    sse_keepalive_seconds: float = option(
        15.0, "--sse-keepalive-seconds", opt.number, "SSE comment line on a stream idle this long; 0: never (15)"
    )
    # -- serving many users (docs/serving.md) --------------------------------------------------------
    workers: int | None = option(
        None,
        "--workers",
        opt.integer(1),
        "worker slots per device (default: 2 on a CPU, 1 on a GPU; a CPU model over 100M parameters gets one)",
    )
    max_batch_images: int | None = option(
        None,
        "--max-batch-images",
        opt.integer(1),
        "images one pipeline call may merge from several requests (default: 8 on a CPU, 16 on a GPU; "
        "1 keeps every request's images byte-identical to it alone)",
    )
    batch_wait_ms: float | None = option(
        None, "--batch-wait-ms", opt.non_negative_number, "wait for companions (default: 30 on CPU, 10 on GPU)"
    )
    shutdown_timeout: float = option(
        30.0, "--shutdown-timeout", opt.non_negative_number, "seconds to finish jobs after SIGTERM/SIGINT (30)"
    )
    # -- webhooks (docs/webhooks.md): signed events when a batch ends -----------------------------------
    webhook_urls: tuple[str, ...] = option(
        (),
        "--webhook-url",
        opt.http_urls,
        "http(s) URL that receives the signed batch events (repeatable; needs --webhook-secret)",
        metavar="URL",
        repeat=True,
    )
    webhook_secret: str | None = option(
        None,
        "--webhook-secret",
        opt.webhook_secret,
        "whsec_ secret that signs the events (whsec_ then base64)",
        secret=True,
    )
    webhook_timeout_seconds: float = option(
        600.0, "--webhook-timeout-seconds", opt.positive_number, "give up on one event at one URL after (600)"
    )
    webhook_attempts: int = option(
        10, "--webhook-attempts", opt.integer(1, 100), "tries per event and URL, with back-off between (10)"
    )
    # -- limits (docs/limits.md, "Resource limits") ---------------------------------------------------
    max_decode_bytes: int = option(
        int(DEFAULT_MAX_DECODE_MB * MiB),
        "--max-decode-mb",
        opt.scaled(MiB),
        "memory one uploaded image may take once decoded, in MiB (default 48)",
    )
    max_request_bytes: int = option(
        int(DEFAULT_MAX_REQUEST_MB * MiB),
        "--max-request-mb",
        opt.scaled(MiB),
        "memory one request's answer may take to encode and send, in MiB, estimated before its job runs (1024)",
    )
    max_concurrent_decodes: int = option(
        2, "--max-concurrent-decodes", opt.integer(1), "uploads decoded at once; the others wait (default 2)"
    )
    max_connections: int = option(
        128, "--max-connections", opt.integer(1), "open connections; one more is answered 503 (default 128)"
    )
    header_timeout_seconds: float = option(
        10.0, "--header-timeout-seconds", opt.positive_number, "seconds for a request's headers, else 408 (10)"
    )
    body_timeout_seconds: float = option(
        60.0, "--body-timeout-seconds", opt.positive_number, "seconds for a request's body, else 408 (60)"
    )
    send_timeout_seconds: float = option(
        30.0,
        "--send-timeout-seconds",
        opt.positive_number,
        "an answer that reaches its client not at all for this long is aborted, its slot freed (30)",
    )
    keep_alive_seconds: float = option(
        5.0, "--keep-alive-seconds", opt.positive_number, "an idle kept-alive connection is closed after (5)"
    )
    # -- many models on one machine (docs/models-memory.md) --------------------------------------------
    memory_budget: opt.MemoryAmount = option(
        opt.MemoryAmount(fraction=DEFAULT_MEMORY_BUDGET_FRACTION),
        "--memory-budget",
        opt.memory_amount,
        "memory the loaded models may take on the device: GiB, or a fraction of its memory (default 0.8)",
        metavar="GIB|FRACTION",
    )
    host_memory_budget: opt.MemoryAmount = option(
        opt.MemoryAmount(fraction=DEFAULT_HOST_BUDGET_FRACTION),
        "--host-memory-budget",
        opt.memory_amount,
        "on a GPU: CPU RAM that models evicted from the GPU may stay warm in (default 0.5 of RAM; 0: none)",
        metavar="GIB|FRACTION",
    )
    preload: tuple[str, ...] = option(
        (),
        "--preload",
        opt.text_tuple,
        "models loaded at start, the others on first use (default: the default model, then all that fit)",
        metavar="NAME,...",
    )
    pin: tuple[str, ...] = option((), "--pin", opt.text_tuple, "models never evicted or unloaded", metavar="NAME,...")
    load_timeout_seconds: float = option(
        300.0, "--load-timeout-seconds", opt.positive_number, "a request waits this long for its model to load (300)"
    )
    idle_unload_seconds: float = option(
        0.0, "--idle-unload-seconds", opt.non_negative_number, "unload a model nobody asked for this long; 0: never (0)"
    )
    # -- Ray Serve (docs/ray.md); the others need --ray ----------------------------------------------
    use_ray: bool = option(
        False, "--ray", opt.boolean, "serve on Ray Serve: a local instance, or the cluster in RAY_ADDRESS", switch=True
    )
    replicas: int = option(RAY.replicas, "--replicas", opt.integer(1), "model replicas per model (default 1)")
    min_replicas: int | None = option(
        RAY.min_replicas,
        "--min-replicas",
        opt.integer(0),
        "autoscale each model from this many replicas (with --max-replicas)",
    )
    max_replicas: int | None = option(
        RAY.max_replicas,
        "--max-replicas",
        opt.integer(1),
        "autoscale each model up to this many replicas (with --min-replicas)",
    )
    target_ongoing_requests: float = option(
        RAY.target_ongoing_requests,
        "--target-ongoing-requests",
        opt.positive_number,
        "autoscaling target: jobs per model replica (2)",
    )
    max_ongoing_requests: int = option(
        RAY.max_ongoing_requests,
        "--max-ongoing-requests",
        opt.integer(1),
        "jobs one model replica holds; more wait at the ingress (4)",
    )
    replica_cpus: float = option(
        RAY.replica_cpus,
        "--replica-cpus",
        opt.non_negative_number,
        "CPUs per model replica, also its torch threads (default 1)",
    )
    replica_gpus: float = option(
        RAY.replica_gpus,
        "--replica-gpus",
        opt.non_negative_number,
        "GPUs per model replica (default 0; 0.5: two on a GPU)",
    )
    ingress_replicas: int = option(
        RAY.ingress_replicas, "--ingress-replicas", opt.integer(1), "replicas of the HTTP front end (1)"
    )
    downscale_delay_seconds: float | None = option(
        RAY.downscale_delay_seconds,
        "--downscale-delay-seconds",
        opt.non_negative_number,
        "autoscaling: a model idle this long loses a replica, down to --min-replicas (Serve's 600)",
    )
    # -- speed (docs/performance.md, "Fast on a GPU"): applied once, when a model loads -----------------
    optimize: frozenset[str] | None = option(
        None, "--optimize", speed.parse_enabled, f"auto, none, or any of {', '.join(speed.OPTIMIZATIONS)} (auto)"
    )
    family_dtypes: tuple[tuple[str, str], ...] = option(
        (),
        "--family-dtype",
        speed.parse_family_dtypes,
        "dtype per model family over --dtype, e.g. karlo=float16,kandinsky22=bfloat16",
        metavar="FAMILY=DTYPE,...",
    )
    compile_cache_dir: Path | None = option(
        None, "--compile-cache-dir", opt.path, "torch.compile's cache (default ~/.cache/easel/torch-compile)"
    )
    compile_warmup_batches: tuple[int, ...] | None = option(
        None,
        "--compile-warmup-batches",
        speed.parse_warmup_batches,
        "with compile: images per job compiled at load, e.g. 1,2,16 (default 1, 2 and the largest batch)",
    )
    # -- smaller and faster, at a measured cost in quality (docs/performance.md, "Smaller and faster") -----
    quantize: str = option(
        "none", "--quantize", speed.parse_quantize, "weights of large layers: none, int8, or fp8 on a GPU (none)"
    )
    step_cache: int = option(
        0, "--step-cache", speed.parse_step_cache, "recompute the decoder UNet's deep blocks every N steps; 0: off (0)"
    )
    # Where each option's value came from ("--port", "EASEL_PORT", "easel.toml: port"), for later messages.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

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
            raise ValueError(f"default model {self.default_model!r} is not a configured model (have: {names})")
        if self.url_ttl_seconds <= 0 or self.queue_size < 1 or self.max_body_bytes < 1:
            raise ValueError("url_ttl_seconds, queue_size and max_body_bytes must be positive")
        if self.max_upload_bytes < 1 or self.max_upload_pixels < 1:
            raise ValueError("max_upload_bytes and max_upload_pixels must be positive")
        if bool(self.webhook_urls) != bool(self.webhook_secret):
            raise ValueError("webhook URLs and a webhook secret go together: events are always signed")
        for kind, listed in (("preloaded", self.preload), ("pinned", self.pin)):
            unknown = [name for name in listed if name not in names]
            if unknown:
                raise ValueError(f"{kind} model {unknown[0]!r} is not a configured model (have: {names})")
        self.ray  # noqa: B018 - checks the Ray options together (min and max replicas)

    @property
    def ray(self) -> RayServeSettings | None:
        """The Ray Serve layout with ``--ray``; None: plain serving in this process."""
        if not self.use_ray:
            return None
        return RayServeSettings(**{f.name: getattr(self, f.name) for f in fields(RayServeSettings)})

    @property
    def default_model_name(self) -> str:
        return self.default_model or self.models[0].name

    def dtype_for(self, family: str) -> str | None:
        """The dtype a model of ``family`` loads in: its --family-dtype, else --dtype (None: the loader's choice)."""
        return dict(self.family_dtypes).get(family, self.dtype)

    def savings_for(self, spec: ModelSpec) -> tuple[str, int, str, str]:
        """The model's quantize and step-cache settings (its easel.toml entry over the options), with their origins."""
        quantize, quantize_origin = self.quantize, self.origin("quantize")
        if spec.quantize is not None:
            quantize, quantize_origin = spec.quantize, f"{spec.entry}.quantize"
        # --step-cache applies to the families that have a UNet decoder; /v1/models says which models it is on.
        step_cache = self.step_cache if spec.family in speed.STEP_CACHE_FAMILIES else 0
        cache_origin = self.origin("step_cache")
        if spec.step_cache is not None:
            step_cache, cache_origin = spec.step_cache, f"{spec.entry}.step_cache"
        return quantize, step_cache, quantize_origin, cache_origin

    def origin(self, name: str) -> str:
        """The label of where option ``name`` was set (its flag when it was not set anywhere)."""
        return self.origins.get(name) or OPTIONS[name].flag


OPTIONS = opt.declared_options(Settings)
