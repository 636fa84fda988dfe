"""Where a loaded model lives and what it costs: the device facts the server's model-memory manager needs.

The server never imports torch, so what it needs from torch is here: a
device's total memory (the budget's base), a model's cost (its weights in
the serving dtype, once per worker copy, plus the working margin of
:mod:`pipelines.memory`), moving a loaded backend between the GPU and CPU
RAM (the warm tier), and giving freed memory back to the system.
"""

from __future__ import annotations

import ctypes
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from weights.footprint import model_footprint

from .cgroup import cgroup_memory
from .device import choose_device, choose_dtype, dtype_name
from .memory import _read_kib_fields, resident_bytes, working_margin


@dataclass(frozen=True)
class ModelCost:
    weights_bytes: int  # one copy's weights as they stay resident (quantized, when asked)
    copies: int  # worker slots that each hold a copy
    margin_bytes: int  # working memory of one generation

    @property
    def device_bytes(self) -> int:
        """What the model takes from the device budget while loaded."""
        return self.weights_bytes * self.copies + self.margin_bytes

    @property
    def host_bytes(self) -> int:
        """What it takes from CPU RAM while parked there (weights only: nothing runs)."""
        return self.weights_bytes * self.copies


def serving_device(device: str | None) -> torch.device:
    return choose_device(device)


def total_memory(device: torch.device) -> int:
    """The device's whole memory (a CUDA device's, or the RAM this process may use)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    return host_memory()


def host_memory() -> int:
    """The RAM this process may use: the machine's (``MemTotal``), or its container's memory limit where that is
    smaller (:mod:`pipelines.cgroup`). What is free right now is checked before each load (pipelines.memory)."""
    machine = _read_kib_fields(Path("/proc/meminfo")).get("MemTotal", 0)
    cgroup = cgroup_memory()
    if cgroup is None:
        return machine
    return min(machine, cgroup.limit) if machine else cgroup.limit


def model_cost(
    model_dir: Path, family: str, device: torch.device, dtype: str | None, quantize: str, copies: int
) -> ModelCost:
    """The model's cost on ``device`` from its weight headers (no weights are read)."""
    footprint = model_footprint(model_dir)
    name = dtype_name(choose_dtype(device, dtype, family))
    weights = resident_bytes(footprint, name, family, quantize)
    return ModelCost(weights, copies, working_margin(footprint.memory_bytes(name)))


def parameter_count(model_dir: Path) -> int:
    return model_footprint(model_dir).parameters


def move_backend(backend: Any, device: str) -> None:
    """Move a loaded backend's modules and tensors to ``device`` (``torch``'s own ``.to``): the warm tier's move.

    Pipelines and modules move in place; plain tensors held by the backend are replaced by their moved copies.
    The backend's own ``device`` is left as it was: it runs only once moved back there.
    """
    for name, value in list(vars(backend).items()):
        if isinstance(value, torch.Tensor):
            setattr(backend, name, value.to(device))
        elif isinstance(value, torch.nn.Module) or _is_pipeline(value):
            value.to(device)


def _is_pipeline(value: Any) -> bool:
    from diffusers import DiffusionPipeline

    return isinstance(value, DiffusionPipeline)


def release_memory() -> None:
    """Give memory freed by an unloaded model back to the system: collect cycles, empty torch's CUDA cache, and ask
    glibc to return free heap pages (without ``malloc_trim`` the process's RSS stays where it was)."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _glibc() -> Any:
    try:  # by its soname: ctypes.util.find_library would start ldconfig in a subprocess
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl)
        return None
    return libc if hasattr(libc, "malloc_trim") else None
