"""Checks that need the disk or torch, made once before the server listens, so a mistake never serves 503s.

Each failure is a :class:`~server.settings.options.ConfigError` that names the flag,
variable or file entry that set the value. The memory check reads the
weights' headers and what the device has free, so that a model too large
for the machine is refused here, in one line, rather than killed half-way
through loading.
"""

from __future__ import annotations

import resource
import tempfile
from collections.abc import Iterable

from patches.h11 import incomplete_event_limit
from patches.uvicorn import check_h11_protocol
from patches.versions import UntestedVersion

from ..engine.base import copies_for
from ..settings.config import Settings
from ..settings.model_specs import ModelSpec
from ..settings.options import ConfigError

HOW_TO_GET = "get one with `easel pull NAME` (see `easel pull --help`) or point the entry at a saved pipeline"


def check_before_listening(settings: Settings, models: Iterable[ModelSpec] | None = None) -> None:
    """Every model directory (or those of ``models``) is there, the asked-for device and dtype exist here, and
    Ray Serve is installed when ``--ray`` asks for it; serving, the HTTP libraries are versions the connection
    guard was tested with."""
    specs = list(settings.models if models is None else models)
    if models is None:
        _check_http_libraries()
        _check_image_dir(settings)
        _raise_descriptor_limit(settings)
    for spec in specs:
        _check_model_dir(spec)
    if settings.device is not None or settings.dtype is not None:
        _check_device_and_dtype(settings)
    _check_memory(settings, specs)
    for spec in specs:
        _check_savings(settings, spec)
    if settings.use_ray and models is None:  # serving; a command that runs one model locally needs no Ray
        _check_ray_is_installed(settings)


def _check_http_libraries() -> None:
    try:
        check_h11_protocol()
        incomplete_event_limit(None)
    except UntestedVersion as error:
        raise ConfigError(str(error)) from None


def _check_image_dir(settings: Settings) -> None:
    """``--image-dir`` exists or can be made, and takes a file: else every ``url`` answer would fail later."""
    directory = settings.image_dir
    if directory is None:
        return  # a fresh temporary directory
    try:
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".easel-write-check-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"{settings.origin('image_dir')}: {directory} cannot hold the images answered as URLs ({reason.lower()}); "
            "choose a writable directory"
        ) from None


# Beside the connections: the listening socket, model and image files, logs, thread pipes, torch's own.
DESCRIPTORS_BESIDE_CONNECTIONS = 64


def _raise_descriptor_limit(settings: Settings) -> None:
    """Let the process open a descriptor per connection: raise the soft limit up to the hard one, or refuse.

    Past the limit, every ``accept()`` fails: the log floods and even ``/health`` stops answering.
    """
    needed = settings.max_connections + DESCRIPTORS_BESIDE_CONNECTIONS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"{settings.origin('max_connections')}: {settings.max_connections} connections need about {needed} "
            f"open files, but this process may open at most {hard} (ulimit -n); lower it to "
            f"{max(1, hard - DESCRIPTORS_BESIDE_CONNECTIONS)} or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def _check_model_dir(spec: ModelSpec) -> None:
    where = f"{spec.source or '--model'}: model {spec.name!r}"
    if not spec.path.is_dir():
        raise ConfigError(f"{where}: no directory {spec.path}; {HOW_TO_GET}")
    if not (spec.path / "model_index.json").is_file():
        raise ConfigError(f"{where}: {spec.path} has no model_index.json, so it is not a saved pipeline; {HOW_TO_GET}")


def _check_device_and_dtype(settings: Settings) -> None:
    from pipelines.device import choose_device, choose_dtype  # imports torch: only when asked for by name

    try:
        device = choose_device(settings.device)
    except ValueError as error:
        raise ConfigError(f"{settings.origin('device')}: {error}") from None
    try:
        choose_dtype(device, settings.dtype)
    except ValueError as error:
        raise ConfigError(f"{settings.origin('dtype')}: {error}") from None


def _check_memory(settings: Settings, specs: list[ModelSpec]) -> None:
    """Every model fits --memory-budget on its own, and the ones that load at start fit in what the device has
    free, beside each other; refused before anything loads (docs/models-memory.md)."""
    from pipelines.device import choose_device, choose_dtype, dtype_name
    from pipelines.memory import ModelTooLarge, check_fits, resident_bytes
    from pipelines.residency import model_cost, parameter_count, total_memory
    from weights.footprint import model_footprint

    device = choose_device(settings.device)
    budget = None if settings.use_ray else settings.memory_budget.of(total_memory(device))
    preloaded = set(settings.preload or [spec.name for spec in specs])  # by default, as many as fit
    before = spent = 0
    for spec in specs:
        dtype = choose_dtype(device, settings.dtype, spec.family)
        quantize = settings.savings_for(spec)[0]
        where = settings.origin("dtype") if settings.dtype is not None else spec.source or "--model"
        copies = copies_for(str(device), settings.workers, parameter_count(spec.path))
        cost = model_cost(spec.path, spec.family, device, settings.dtype_for(spec.family), quantize, copies)
        at_start = spec.name in preloaded and (
            settings.preload or budget is None or spent + cost.device_bytes <= budget
        )
        try:
            check_fits(spec.name, spec.family, spec.path, device, dtype, others=before if at_start else 0)
        except ModelTooLarge as error:
            raise ConfigError(f"{where}: {error}") from None  # first: what is free, and what dtype would fit
        if budget is not None and cost.device_bytes > budget:
            raise ConfigError(
                f"{settings.origin('memory_budget')}: model {spec.name!r} can never fit: it needs "
                f"{_size(cost.device_bytes)} ({_size(cost.weights_bytes)} of weights x {cost.copies} worker "
                f"copies + {_size(cost.margin_bytes)} working margin), more than the budget of {_size(budget)} "
                f"({settings.memory_budget}); raise --memory-budget"
            )
        if at_start:  # what stays once loaded: with --quantize, the quantized size (loading needs the full one)
            spent += cost.device_bytes
            if budget is not None and spent > budget:  # only --preload can name more than fits
                raise ConfigError(
                    f"{settings.origin('preload')}: the preloaded models need {_size(spent)} together, more than "
                    f"--memory-budget {_size(budget)} ({settings.memory_budget}); preload fewer or raise the budget"
                )
            before += resident_bytes(model_footprint(spec.path), dtype_name(dtype), spec.family, quantize)


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e8 else f"{count / 1e6:.1f} MB"


def _check_savings(settings: Settings, spec: ModelSpec) -> None:
    """--quantize and --step-cache (or the model's easel.toml entry) are ones this device and model can take."""
    from pipelines.device import choose_device
    from pipelines.optimize import resolve
    from pipelines.quantize import check_supported
    from pipelines.savings import check_savings
    from pipelines.speed import SpeedOptions

    quantize, step_cache, quantize_origin, cache_origin = settings.savings_for(spec)
    device = choose_device(settings.device)
    try:
        check_supported(quantize, device)
    except ValueError as error:
        raise ConfigError(f"{quantize_origin}: model {spec.name!r}: {error}") from None
    try:
        enabled = resolve(settings.optimize, device)
        check_savings(SpeedOptions(settings.optimize, step_cache=step_cache), device, spec.family, enabled)
    except ValueError as error:
        raise ConfigError(f"{cache_origin}: model {spec.name!r}: {error}") from None


def _check_ray_is_installed(settings: Settings) -> None:
    from ..scaleout import why_ray_serve_is_missing

    missing = why_ray_serve_is_missing()
    if missing is not None:
        raise ConfigError(
            f"{settings.origin('use_ray')}: needs Ray Serve, which cannot be imported here ({missing}); "
            "install the ray extra: pip install -e '.[ray]'"
        )
