"""bfloat16 weights that compute in float32, on CPUs without bfloat16 instructions.

``--dtype bfloat16`` halves a model's memory, but a CPU without bfloat16
instructions (x86 without AVX512-BF16 or AMX) emulates every bfloat16 matrix
product: a real-size Kandinsky 2.2 prior step then takes minutes instead of
seconds (docs/performance.md, "At real size"). On such a CPU the weights stay
in bfloat16 in memory and each layer computes in float32: diffusers'
layerwise casting (:func:`diffusers.hooks.apply_layerwise_casting`) widens a
layer's weights just before it runs and narrows them right after, so memory
holds the bfloat16 weights plus one layer in float32. The narrowing is
exact (every bfloat16 value is a float32 value), so the same seed gives the same
bytes every time.

Layerwise casting covers the linear, convolution and embedding layers, which
hold nearly all the weights. Everything else (norms, positional embeddings,
the scheduler-facing parameters) is small and is converted to float32 once.
Each hooked layer also widens its floating inputs: some modules cast their
input to their weights' (stored) dtype before calling a layer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("easel.compute_dtype")

# /proc/cpuinfo flags that mean the CPU computes the dtype natively (x86: AVX512 or AMX; Arm: the Features line).
# float16 has no entry: on a CPU it keeps its behaviour (Kandinsky computes in it, Karlo refuses it).
NATIVE_FLAGS: dict[torch.dtype, frozenset[str]] = {torch.bfloat16: frozenset({"avx512_bf16", "amx_bf16", "bf16"})}
UPCAST_TO = torch.float32


@cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, as on macOS)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    found = re.findall(r"^(?:flags|Features)\s*:(.*)$", text, flags=re.MULTILINE)
    return frozenset(word for line in found for word in line.split())


def cpu_computes_natively(dtype: torch.dtype) -> bool:
    """Whether this CPU computes ``dtype`` natively, as far as serving cares (a dtype without flags: yes).

    torch's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) reports
    bfloat16 support on CPUs that only emulate it (an AVX2-only EPYC), so the
    flags decide. Tests replace this function.
    """
    flags = NATIVE_FLAGS.get(dtype)
    return flags is None or bool(flags & cpu_flags())


def compute_dtype_for(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype layers compute in for weights stored in ``dtype``: float32 for bfloat16 on a CPU without it."""
    if device.type == "cpu" and not cpu_computes_natively(dtype):
        return UPCAST_TO
    return dtype


def upcast_compute(models: Iterable[torch.nn.Module], storage: torch.dtype, compute: torch.dtype) -> int:
    """Make ``models`` keep their weights in ``storage`` and compute in ``compute``; the number of layers hooked.

    Layers already quantized (their weight a torchao tensor, or a
    :class:`pipelines.quantize.QuantizedConv2d`) are left as they are: they
    were quantized from ``compute`` and dequantize into it themselves.
    """
    from diffusers.hooks import apply_layerwise_casting

    from .quantize import QuantizedConv2d, is_quantized

    hooked = 0
    for model in models:
        skip = tuple(f"^{re.escape(name)}$" for name, layer in model.named_modules() if is_quantized(layer))
        apply_layerwise_casting(
            model, storage, compute, skip_modules_pattern=skip, skip_modules_classes=(QuantizedConv2d,)
        )
        for layer in model.modules():
            if _is_hooked(layer):
                layer.register_forward_pre_hook(_widen_inputs(compute), with_kwargs=True)
                hooked += 1
            elif not is_quantized(layer) and not isinstance(layer, QuantizedConv2d):
                _convert_own_tensors(layer, compute)
    return hooked


def _is_hooked(layer: torch.nn.Module) -> bool:
    registry = getattr(layer, "_diffusers_hook", None)
    return registry is not None and registry.get_hook("layerwise_casting") is not None


def _widen_inputs(compute: torch.dtype) -> Any:
    def widen(_layer: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return tuple(_widened(value, compute) for value in args), {k: _widened(v, compute) for k, v in kwargs.items()}

    return widen


def _widened(value: Any, compute: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != compute:
        return value.to(compute)
    return value


@torch.no_grad()
def _convert_own_tensors(layer: torch.nn.Module, dtype: torch.dtype) -> None:
    """Convert the layer's own floating parameters and buffers (not its children's) to ``dtype``."""
    for parameter in layer.parameters(recurse=False):
        if parameter.is_floating_point() and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
    for name, buffer in layer.named_buffers(recurse=False):
        if buffer.is_floating_point() and buffer.dtype != dtype:
            setattr(layer, name, buffer.to(dtype))


def check_upcast_options(enabled: frozenset[str]) -> None:
    """Refuse, in one line (ValueError), the speed settings that do not combine with float32 compute, before loading.

    Fusing makes new layers the casting does not know of, and compiling traces through its hooks: neither is tested.
    """
    clashing = sorted(enabled & {"fused_qkv", "compile", "max_autotune", "cuda_graphs"})
    if clashing:
        raise ValueError(
            f"{', '.join(clashing)} cannot be combined with bfloat16 weights computing in float32 "
            "(this CPU has no bfloat16 instructions): use --dtype float32, or leave them off"
        )


def store_narrow_compute_wide(
    name: str, models: list[torch.nn.Module], storage: torch.dtype, compute: torch.dtype, quantize: str
) -> dict[str, Any]:
    """Quantize ``models`` from ``compute`` (if asked) and hook the rest; what was done, for ``info.optimizations``.

    Quantizing comes first because a layer hooked for casting cannot be unhooked, and the quantized layers then
    compute in ``compute`` themselves.
    """
    from .quantize import quantize_models

    done: dict[str, Any] = {}
    if quantize != "none":
        report = quantize_models(models, quantize, compute_dtype=compute)
        done["quantize"] = report.as_dict()
        log.info(
            "%s: %s weights in %d layers, %.1f MB -> %.1f MB",
            name,
            quantize,
            report.layers,
            report.weight_bytes_before / 1e6,
            report.weight_bytes_after / 1e6,
        )
    layers = upcast_compute(models, storage, compute)
    log.info(
        "%s: weights stored in %s, computing in %s (this CPU has no %s instructions): %d layers cast as they run",
        name,
        str(storage).removeprefix("torch."),
        str(compute).removeprefix("torch."),
        str(storage).removeprefix("torch."),
        layers,
    )
    return done
