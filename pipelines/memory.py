"""Will a model fit? Its memory need, from the weight headers, against what the device has free, before loading.

A model needs its weights in the serving dtype (:mod:`weights.footprint`)
plus a working margin for the activations of one generation: a tenth of the
weights, and at least 1 GiB. What is free is the smallest of the limits that
apply: on a CPU, ``MemAvailable``, the process's cgroup memory limit (v1 or
v2, :mod:`pipelines.cgroup`) less its usage, and ``RLIMIT_AS``/``RLIMIT_DATA`` less what the process
already maps; on CUDA, ``torch.cuda.mem_get_info``. A model that cannot fit
is refused in one line that says what it needs, what is free, and which
smaller dtype would fit, instead of being killed by the kernel half-way.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weights.footprint import DTYPE_BYTES, FLOATING, ModelFootprint, TensorInfo, model_footprint

from .cgroup import cgroup_memory
from .device import dtype_name

GIB = 1024**3
# The component folders whose models pipelines.quantize quantizes (the MoVQ and Karlo's text projection are left
# whole), and among them the UNets, whose convolutions are quantized too.
QUANTIZED_FOLDERS = {
    "kandinsky22": ("prior_prior", "prior_text_encoder", "prior_image_encoder", "unet"),
    "karlo": ("prior", "text_encoder", "image_encoder", "decoder", "super_res_first", "super_res_last"),
}
UNET_FOLDERS = {"kandinsky22": ("unet",), "karlo": ("decoder", "super_res_first", "super_res_last")}
EMBEDDING_TABLES = ("token_embedding.weight", "position_embedding.weight")
WORKING_MARGIN_FRACTION = 0.10
WORKING_MARGIN_FLOOR = 1 * GIB
_UNLIMITED = 1 << 60  # no limit that can be read


class ModelTooLarge(ValueError):
    """The model's memory need exceeds what the device has free; the message is the one line to show."""


@dataclass(frozen=True)
class FreeMemory:
    bytes: int
    source: str  # which limit decided it: "MemAvailable", "cgroup memory limit", "RLIMIT_AS", "cuda:0", ...


def memory_need(footprint: ModelFootprint, dtype: str) -> int:
    """Bytes the model needs in ``dtype``: its weights plus the working margin."""
    weights = footprint.memory_bytes(dtype)
    return weights + working_margin(weights)


def resident_bytes(footprint: ModelFootprint, dtype: str, family: str, quantize: str = "none") -> int:
    """Bytes the model's weights hold once loaded and, with ``quantize``, quantized (:mod:`pipelines.quantize`).

    Loading itself still needs the full-precision size (each model is loaded, then quantized); this is what
    stays, which is what the models loaded after it must fit beside. An estimate from the stored tensors'
    names and shapes: the large matrices of the quantized components, and the UNets' large convolution
    kernels, at one byte per weight plus one scale per output channel.
    """
    full = footprint.memory_bytes(dtype)
    if quantize == "none":
        return full
    size = DTYPE_BYTES[dtype]
    saved = 0
    for component in footprint.components:
        if component.folder not in QUANTIZED_FOLDERS[family]:
            continue
        kernels_too = component.folder in UNET_FOLDERS[family]
        for tensor in component.tensors:
            if _is_quantized(tensor, kernels_too):
                saved += tensor.numel * (size - 1) - tensor.shape[0] * size
    return full - saved


def _is_quantized(tensor: TensorInfo, kernels_too: bool) -> bool:
    from .quantize import MIN_WEIGHT_ELEMENTS

    if tensor.dtype not in FLOATING or not tensor.name.endswith(".weight") or tensor.numel < MIN_WEIGHT_ELEMENTS:
        return False
    if tensor.name.endswith(EMBEDDING_TABLES):  # looked up, not multiplied: not a linear layer
        return False
    return len(tensor.shape) == 2 or (kernels_too and len(tensor.shape) == 4)


def working_margin(weight_bytes: int) -> int:
    return max(WORKING_MARGIN_FLOOR, int(weight_bytes * WORKING_MARGIN_FRACTION))


def free_memory(device: torch.device) -> FreeMemory:
    """What ``device`` has free for a new model (CPU: the tightest of the limits this process runs under)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return FreeMemory(free, str(device))
    # MPS shares the machine's memory, so the CPU's limits apply to it too.
    return min(_cpu_limits(), key=lambda limit: limit.bytes)


def _cpu_limits() -> list[FreeMemory]:
    limits = []
    meminfo = _read_kib_fields(Path("/proc/meminfo"))
    if "MemAvailable" in meminfo:
        limits.append(FreeMemory(meminfo["MemAvailable"], "MemAvailable"))
    cgroup = cgroup_memory()
    if cgroup is not None:
        limits.append(FreeMemory(cgroup.headroom, "cgroup memory limit"))
    status = _read_kib_fields(Path("/proc/self/status"))
    for name, limit, used in (
        ("RLIMIT_AS", resource.RLIMIT_AS, "VmSize"),
        ("RLIMIT_DATA", resource.RLIMIT_DATA, "VmData"),
    ):
        soft, _hard = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY:
            limits.append(FreeMemory(max(0, soft - status.get(used, 0)), name))
    if not limits:  # not Linux: nothing to read, so nothing to refuse on
        limits.append(FreeMemory(_UNLIMITED, "unknown"))
    return limits


def _read_kib_fields(path: Path) -> dict[str, int]:
    """``Name: 123 kB`` lines (``/proc/meminfo``, ``/proc/self/status``) as bytes."""
    fields = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024
    return fields


def smaller_dtypes(device: torch.device, family: str, dtype: torch.dtype) -> list[torch.dtype]:
    """Dtypes that take less memory than ``dtype`` and that this family can run in on ``device``."""
    if dtype not in (torch.float32, torch.float64):
        return []
    if device.type == "cuda":
        return [torch.bfloat16, torch.float16] if torch.cuda.is_bf16_supported() else [torch.float16]
    if device.type == "mps":
        return [torch.float16]
    # Karlo's super-resolution upscale has no CPU half kernel (pipelines.karlo).
    return [] if family == "karlo" else [torch.bfloat16]


def check_fits(
    name: str,
    family: str,
    model_dir: Path,
    device: torch.device,
    dtype: torch.dtype,
    *,
    others: int = 0,
    releasable: int = 0,
) -> None:
    """Raise :class:`ModelTooLarge` if the model cannot fit on ``device`` beside ``others`` bytes still to load,
    even once ``releasable`` bytes are freed (the weights of the idle models a load may evict first)."""
    footprint = model_footprint(model_dir)
    need = memory_need(footprint, dtype_name(dtype)) + others
    free = free_memory(device)
    if releasable > 0:
        free = FreeMemory(free.bytes + releasable, f"{free.source}, with {_gb(releasable)} of idle models evicted")
    if need <= free.bytes:
        return
    raise ModelTooLarge(refusal(name, footprint, dtype, need, free, smaller_dtypes(device, family, dtype), others))


def refusal(
    name: str,
    footprint: ModelFootprint,
    dtype: torch.dtype,
    need: int,
    free: FreeMemory,
    smaller: list[torch.dtype],
    others: int = 0,
) -> str:
    """The one line: what the model needs, what is free, and what would fit."""
    weights = footprint.memory_bytes(dtype_name(dtype))
    beside = f" beside {_gb(others)} for the other models" if others else ""
    line = (
        f"model {name!r} does not fit: it needs {_gb(need)} in {dtype_name(dtype)} "
        f"({_gb(weights)} of weights + {_gb(working_margin(weights))} working margin{beside}), "
        f"but only {_gb(free.bytes)} is free ({free.source})"
    )
    for candidate in smaller:
        candidate_need = memory_need(footprint, dtype_name(candidate)) + others
        if candidate_need <= free.bytes:
            return f"{line}; --dtype {dtype_name(candidate)} would fit ({_gb(candidate_need)})"
    return f"{line}; free some memory, or use a machine with more"


def _gb(count: int) -> str:
    return f"{count / 1e9:.1f} GB"


def parameter_counts(components: dict[str, Any]) -> dict[str, int]:
    """Parameters per named ``torch.nn.Module``."""
    return {name: sum(p.numel() for p in module.parameters()) for name, module in components.items()}
