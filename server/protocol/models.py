"""OpenAI's model objects, plus Easel's ``status`` and ``capabilities``.

Local models and aliases are both listed; an alias has ``alias_of``.
``capabilities`` is null until the model has loaded. ``license`` and
``weights`` (parameters, stored dtypes, bytes on disk) are read from the
model's directory before it loads (null until then, or if unreadable).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pipelines.base import ModelInfo, Task


def capabilities(info: ModelInfo, max_n: int) -> dict[str, Any]:
    square = info.native_size_for(1, 1)
    endpoints = ["generations"] + [
        name for task, name in ((Task.EDIT, "edits"), (Task.VARIATION, "variations")) if task in info.tasks
    ]
    return {
        "family": info.family,
        "native_size": f"{square[0]}x{square[1]}",
        "fixed_native_size": None if info.fixed_native_size is None else "{}x{}".format(*info.fixed_native_size),
        "size_multiple": info.size_multiple,
        "size_bounds": {"min_side": info.min_side, "max_side": info.max_side},
        "endpoints": endpoints,
        "supports_negative_prompt": info.supports_negative_prompt,
        "supports_guidance_interval": info.supports_guidance_interval,
        "supports_step_cache": info.supports_step_cache,
        "quality_presets": {name: asdict(preset) for name, preset in info.presets.items()},
        "complexity_presets": {name: asdict(preset) for name, preset in info.complexities.items()},
        "supports_animation": info.supports_animation,
        # Edits: an area marked by a mask, markup or transparency (inpainting), or the whole image (image to image).
        "edit_modes": list(info.edit_modes) if Task.EDIT in info.tasks else [],
        "parameter_counts": dict(info.parameter_counts),
        "device": info.device,
        "dtype": info.dtype,
        # float32 where half-precision weights compute wide, on a CPU without half-precision instructions
        "compute_dtype": info.compute_dtype or info.dtype,
        "optimizations": dict(info.optimizations),
        "max_n": max_n,
    }


def model_object(
    *,
    model_id: str,
    model_name: str,
    created: int,
    owned_by: str,
    status: str,
    error: str | None,
    info: ModelInfo | None,
    max_n: int,
    facts: dict[str, Any] | None = None,
    memory: dict[str, Any] | None = None,
    replicas: dict[str, int] | None = None,
) -> dict[str, Any]:
    """An OpenAI model object for ``model_id`` (an alias of ``model_name`` when they differ)."""
    body: dict[str, Any] = {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}
    if model_id != model_name:
        body["alias_of"] = model_name
    body["status"] = status
    body["license"] = None if facts is None else facts["license"]
    body["weights"] = None if facts is None else {key: value for key, value in facts.items() if key != "license"}
    if memory is not None:
        body["memory"] = memory  # where the weights are (tier) and what they cost
    if replicas is not None:
        body["replicas"] = replicas  # on Ray Serve: the model deployment's replicas by state, and its bounds
    if error is not None:
        body["error"] = error
    body["capabilities"] = None if info is None else capabilities(info, max_n)
    return body


def model_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": objects}
