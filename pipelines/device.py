"""Which device and dtype a backend runs on: automatic by default, overridable by name.

Automatic: CUDA, else Apple MPS, else CPU. Half precision only on CUDA
(bfloat16 where the GPU supports it, since it does not overflow where fp16
can; float16 otherwise), except for a family whose own choice is recorded in
``CUDA_DTYPE_BY_FAMILY``; MPS and CPU run float32, where half precision is
slow or unsupported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .speed import DTYPE_NAMES, canonical_dtype

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}

# Karlo's UnCLIP has been reported to degrade in bfloat16 (8 mantissa bits, against float16's 11); until a
# GPU run of benchmarks/bench_gpu.py (its Karlo dtype rows) says otherwise, it runs in float16 on CUDA.
CUDA_DTYPE_BY_FAMILY = {"karlo": torch.float16}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def choose_device(requested: str | None = None) -> torch.device:
    """``requested`` ("cuda", "cuda:1", "mps", "cpu") checked for availability, or the best available."""
    if requested is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise ValueError(f"unknown device {requested!r}: use 'cuda', 'cuda:N', 'mps' or 'cpu'") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {requested!r} requested but only {count} CUDA device(s) exist")
    elif device.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {requested!r} requested but Apple MPS is not available on this machine")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {requested!r}: use 'cuda', 'cuda:N', 'mps' or 'cpu'")
    return device


def choose_dtype(device: torch.device, requested: str | None = None, family: str | None = None) -> torch.dtype:
    """``requested`` by name ("float32", "float16", "bfloat16"), or the best dtype for ``device`` and ``family``."""
    if requested is not None:
        return DTYPES[canonical_dtype(requested)]
    if device.type == "cuda":
        if family in CUDA_DTYPE_BY_FAMILY:
            return CUDA_DTYPE_BY_FAMILY[family]
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """The name ``choose_dtype`` accepts for ``dtype`` ("float16", ...)."""
    return str(dtype).removeprefix("torch.")


def from_pretrained_dtype(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """The ``from_pretrained`` keyword for ``dtype``: ``dtype`` on newer diffusers, ``torch_dtype`` before."""
    from diffusers.utils import deprecation_utils

    # Newer diffusers resolve ``dtype`` and warn on every ``torch_dtype``; older ones only know the latter.
    keyword = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    return {keyword: dtype}


def from_pretrained_options(dtype: torch.dtype) -> dict[str, object]:
    """A pipeline's ``from_pretrained`` keywords: offline, in ``dtype``, each module created empty and filled once.

    ``low_cpu_mem_usage`` (which needs accelerate) builds modules on the meta
    device and then loads the weights into them, so loading costs the weights
    once, in the serving dtype, rather than random weights first and the real
    ones on top.
    """
    return {"local_files_only": True, "low_cpu_mem_usage": True, **from_pretrained_dtype(dtype)}


@contextlib.contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """On a CPU, run the block on one thread, then restore this thread's count.

    For values computed once at load and reused by every call (Kandinsky's zero-image
    embedding): CPU sums change in their last bits with the thread count, and the count
    of whatever thread loads a model is an accident, so such values use a fixed one.
    """
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
