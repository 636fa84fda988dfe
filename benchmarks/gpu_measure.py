"""Timing, FLOP counting and memory for benchmarks/bench_gpu.py: device-synchronised clocks, medians, peaks."""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

# H200 SXM: 989.4 dense bf16/fp16 tensor TFLOP/s, NVIDIA's H200 datasheet (1,979 "with sparsity", halved).
# Reported beside it: an 8192^3 bf16 matrix product timed in the same run (KINDS.md saw 769-798 here).
DATASHEET_BF16_TFLOPS = {"NVIDIA H200": 989.4, "NVIDIA H100 80GB HBM3": 989.4}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """Median wall seconds of ``repeats`` calls (the device drained before and after each), and the last result."""
    seconds = []
    result = None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset; on a CPU the process's peak RSS (never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def pixels(images: list) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


def pixel_difference(images: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Largest and mean absolute difference in 8-bit levels."""
    difference = np.abs(images - reference)
    return {"max_pixel_diff": int(difference.max()), "mean_pixel_diff": round(float(difference.mean()), 3)}


class InputRecorder:
    """Keeps a copy of the inputs of a module's first call inside a ``with`` block, to replay it alone."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.args: tuple = ()
        self.kwargs: dict[str, Any] = {}
        self.seen = False

    def __enter__(self) -> InputRecorder:
        self.handle = self.module.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()

    def batch_rows(self) -> int:
        sample = self.kwargs.get("sample", self.args[0] if self.args else None)
        return int(sample.shape[0]) if isinstance(sample, torch.Tensor) else 0

    def _record(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        if not self.seen:
            self.args, self.kwargs = _cloned(args), _cloned(kwargs)
            self.seen = True


def _cloned(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: _cloned(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cloned(item) for item in value)
    return value


def forward_flops(module: torch.nn.Module, recorder: InputRecorder) -> int:
    """FLOPs of one forward (matrix products, convolutions, attention), counted on the uncompiled forward."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module.forward(*recorder.args, **recorder.kwargs)  # .forward skips a compiled __call__
    return counter.get_total_flops()


def forward_seconds(module: torch.nn.Module, recorder: InputRecorder, device: torch.device, repeats: int) -> float:
    """Median seconds of one forward with the recorded inputs, through the module's (maybe compiled) call."""
    with torch.inference_mode():
        for _ in range(2):  # warm-up: compile, CUDA graph recording, allocator growth
            module(*recorder.args, **recorder.kwargs)
        seconds, _ = timed(lambda: module(*recorder.args, **recorder.kwargs), device, repeats)
    return seconds


def matmul_tflops(device: torch.device, dtype: torch.dtype, side: int = 8192, repeats: int = 10) -> float:
    """The matrix-product ceiling this run sees: TFLOP/s of a side^3 product on random data."""
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds, _ = timed(lambda: a @ b, device, repeats)
    return 2 * side**3 / seconds / 1e12


def device_description(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda":
        return {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__}
    name = torch.cuda.get_device_name(device)
    return {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1),
        "datasheet_bf16_tflops": DATASHEET_BF16_TFLOPS.get(name),
    }
