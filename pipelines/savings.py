"""Memory and speed settings that trade a little quality: weight quantization and step caching.

Both are applied once, at load, after :mod:`pipelines.optimize` has laid out the
models and before anything is compiled or warmed up. Unlike the settings there,
these change what a request computes, so each is off unless asked for, and
``benchmarks/bench_tradeoffs.py`` prices each in accuracy points.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .base import ImageBackend
from .speed import STEP_CACHE_FAMILIES, SpeedOptions

log = logging.getLogger("easel.savings")


def check_savings(options: SpeedOptions, device: torch.device, family: str, enabled: frozenset[str]) -> None:
    """Refuse, in one line (ValueError), a setting this device or model cannot take, before loading."""
    from .quantize import check_supported

    check_supported(options.quantize, device)
    if options.step_cache < 0:
        raise ValueError(f"a step cache is 0 (off) or a whole number of steps >= 1, got {options.step_cache}")
    if options.step_cache and family not in STEP_CACHE_FAMILIES:
        raise ValueError(f"step caching works on the {', '.join(STEP_CACHE_FAMILIES)} family's decoder, not {family}")
    if options.step_cache and "compile" in enabled:
        raise ValueError("step caching cannot be combined with compile: the cache's branching defeats the graph")


def apply_savings(backend: ImageBackend, options: SpeedOptions, models: list[torch.nn.Module]) -> dict[str, Any]:
    """Quantize ``models`` (the backend's) and install the step cache; what was done, for ``info.optimizations``.

    With both off nothing is touched and nothing is reported, so the models and /v1/models stay as before.
    """
    from .quantize import quantize_models

    done: dict[str, Any] = {}
    if options.quantize != "none":
        report = quantize_models(models, options.quantize)
        done["quantize"] = report.as_dict()
        log.info(
            "%s: %s weights in %d layers, %.1f MB -> %.1f MB",
            backend.info.name,
            options.quantize,
            report.layers,
            report.weight_bytes_before / 1e6,
            report.weight_bytes_after / 1e6,
        )
    if options.step_cache:
        from .step_cache import install

        decoder = getattr(backend, "decoder_pipe")  # noqa: B009 - every STEP_CACHE_FAMILIES backend has one
        install(decoder.unet, decoder.scheduler, options.step_cache)
        done["step_cache"] = options.step_cache
    return done
