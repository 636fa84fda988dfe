"""Load a model directory into an :class:`pipelines.base.ImageBackend`, offline, once.

Nothing here touches the network (a load puts the hub in offline mode first,
and every load passes ``local_files_only``). A missing model is a
``FileNotFoundError`` that says how to get it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from patches.convert_on_read import converting_to
from patches.huggingface_hub import go_offline

from .base import ImageBackend
from .compute_dtype import check_upcast_options, compute_dtype_for, store_narrow_compute_wide
from .device import choose_device, choose_dtype, dtype_name, from_pretrained_options
from .memory import check_fits
from .model_config import FAMILIES, read_easel_config
from .preflight import check_model_files
from .presets import presets_for
from .savings import check_savings
from .speed import SpeedOptions

_HOW_TO_GET = {
    "kandinsky22": "Download it with `easel pull kandinsky-2-2`, or point the entry at a saved pipeline.",
    "karlo": "Download it with `easel pull karlo`, or point the entry at a saved pipeline.",
}
_HOW_TO_GET_EASEL_MINI = "Train it with `python -m pipelines.lab.training.train`, which writes it to {path}."


def _missing_model_message(name: str, family: str, presets: str, path: Path, what: str) -> str:
    if name == "easel-mini" or presets == "easel-mini":
        how = _HOW_TO_GET_EASEL_MINI
    else:
        how = _HOW_TO_GET[family]
    return f"model {name!r}: {what}. " + how.format(path=path)


def load_backend(
    name: str,
    family: str,
    path: Path | str,
    *,
    presets: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    optimize: SpeedOptions | None = None,
) -> ImageBackend:
    """The backend for the model saved at ``path``.

    ``family`` is "kandinsky22" or "karlo"; ``presets`` names the quality table
    in :mod:`pipelines.presets` (default: the family's). ``device`` and ``dtype``
    are chosen automatically unless given (see :mod:`pipelines.device`);
    ``optimize`` says which speed settings :mod:`pipelines.optimize` applies
    (default: the device's defaults).
    """
    go_offline()
    plan = check_before_loading(name, family, path, presets=presets, device=device, dtype=dtype, optimize=optimize)
    path, torch_device, torch_dtype, options = plan.path, plan.device, plan.dtype, plan.options
    from .finite_weights import check_finite_weights
    from .optimize import backend_pipelines, optimize_backend, pipeline_models

    compute_dtype = compute_dtype_for(torch_device, torch_dtype)
    upcast = compute_dtype != torch_dtype
    upcast_done: dict[str, Any] = {}
    backend: ImageBackend
    if family == "kandinsky22":
        from .kandinsky import KandinskyBackend

        with converting_to(torch_dtype):  # a file in another dtype costs its converted size, not both
            combined = _load_kandinsky(path, plan.index, torch_device, torch_dtype)
        check_finite_weights(path, combined.components)
        if upcast:  # before the backend computes its zero-image embedding
            models = pipeline_models([combined.prior_pipe, combined.decoder_pipe])
            upcast_done = store_narrow_compute_wide(name, models, torch_dtype, compute_dtype, options.quantize)
        backend = KandinskyBackend(name, combined, read_easel_config(path), presets=plan.presets, device=torch_device)
    else:
        from .karlo import KarloBackend

        with converting_to(torch_dtype):
            backend = KarloBackend(
                name, path, presets=plan.presets, device=torch_device, dtype=torch_dtype, compute_dtype=compute_dtype
            )
        check_finite_weights(path, backend.modules_by_folder())
        if upcast:
            models = pipeline_models(backend_pipelines(backend))
            upcast_done = store_narrow_compute_wide(name, models, torch_dtype, compute_dtype, options.quantize)
    if not upcast:
        return optimize_backend(backend, options)
    backend = optimize_backend(backend, replace(options, quantize="none"))  # quantized above, from float32
    info = backend.info
    optimizations = {**info.optimizations, **upcast_done}
    backend.info = replace(
        info, dtype=dtype_name(torch_dtype), compute_dtype=dtype_name(compute_dtype), optimizations=optimizations
    )
    return backend


@dataclass(frozen=True)
class LoadPlan:
    """What the checks before a load settled: the folder, its parsed index, where and in what dtype it loads."""

    path: Path
    index: dict[str, Any]
    presets: str
    device: torch.device
    dtype: torch.dtype
    options: SpeedOptions


def check_before_loading(
    name: str,
    family: str,
    path: Path | str,
    *,
    presets: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    optimize: SpeedOptions | None = None,
    releasable: int = 0,
) -> LoadPlan:
    """Everything about a load that can be checked before a byte of weights is read: the family and presets,
    the folder and its files (:mod:`pipelines.preflight`), the device and dtype, the settings this device takes,
    and that the model fits in what is free plus ``releasable`` bytes (the idle models a load may evict first).

    The model-memory manager runs these before it evicts anyone, so a model that cannot load evicts nobody.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}: expected one of {', '.join(FAMILIES)}")
    presets = presets or family
    try:
        presets_for(presets)
    except KeyError:
        raise ValueError(f"unknown preset table {presets!r} (see pipelines/presets.py)") from None
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(_missing_model_message(name, family, presets, path, f"no directory {path}"))
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(_missing_model_message(name, family, presets, path, f"{path} has no model_index.json"))
    index = check_model_files(path)  # name a broken or missing file before the libraries guess at it
    torch_device = choose_device(device)
    torch_dtype = choose_dtype(torch_device, dtype, family)
    check_fits(name, family, path, torch_device, torch_dtype, releasable=releasable)  # refuse before loading
    from .optimize import resolve

    options = optimize or SpeedOptions()
    enabled = resolve(options.enabled, torch_device)
    check_savings(options, torch_device, family, enabled)
    if compute_dtype_for(torch_device, torch_dtype) != torch_dtype:
        check_upcast_options(enabled)
    return LoadPlan(path, index, presets, torch_device, torch_dtype, options)


def _load_kandinsky(model_dir: Path, index: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Any:
    """The directory's combined pipeline (or its inpaint variant: a decoder UNet with 9 input channels), on ``device``.

    The directory is what ``save_pretrained`` of either combined pipeline writes: the
    decoder's components plus ``prior_*`` sub-folders.
    """
    from diffusers import KandinskyV22CombinedPipeline, KandinskyV22InpaintCombinedPipeline

    inpaint = index.get("_class_name") == KandinskyV22InpaintCombinedPipeline.__name__
    pipeline_class = KandinskyV22InpaintCombinedPipeline if inpaint else KandinskyV22CombinedPipeline
    combined = pipeline_class.from_pretrained(model_dir, **from_pretrained_options(dtype))
    for pipe in (combined.prior_pipe, combined.decoder_pipe):
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
    _pin_noise_schedule(combined.decoder_pipe.scheduler, device)
    return combined


def _pin_noise_schedule(scheduler: Any, device: torch.device) -> None:
    """Keep the scheduler's noise schedule on ``device`` from the start.

    ``add_noise`` (used by inpainting) moves ``alphas_cumprod`` to the latents'
    device as a side effect, after which ``step`` computes on the GPU instead of
    the CPU and rounds differently: the first edit after loading would differ
    from every later one with the same seed. Moving it once, up front, makes
    every call compute the same way.
    """
    schedule = getattr(scheduler, "alphas_cumprod", None)
    if isinstance(schedule, torch.Tensor):
        scheduler.alphas_cumprod = schedule.to(device)
