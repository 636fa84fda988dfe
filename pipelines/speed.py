"""The speed settings a backend is loaded with, and how they are written (docs/performance.md, "Fast on a GPU").

:mod:`pipelines.optimize` applies them; this module holds only their names and
parsers, without torch, so the server's configuration checks them before any
model library loads. Each parser takes command-line text or a TOML value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model_config import FAMILIES

OPTIMIZATIONS = ("sdpa", "channels_last", "fused_qkv", "compile", "max_autotune", "cuda_graphs")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
QUANTIZE_MODES = ("none", "int8", "fp8")
STEP_CACHE_FAMILIES = ("kandinsky22",)  # a decoder UNet with the down/up blocks step caching skips


@dataclass(frozen=True)
class SpeedOptions:
    """Load-time speed settings for a backend; :mod:`pipelines.optimize` resolves and applies them."""

    enabled: frozenset[str] | None = None  # names from OPTIMIZATIONS; None: the device's defaults
    compile_cache_dir: Path | None = None  # torch.compile's persistent cache; None: ~/.cache/easel/torch-compile
    warmup_batches: tuple[int, ...] = (1, 2)  # with compile: images per job compiled at load (warmup_batches_for)
    quantize: str = "none"  # weight storage of the large layers: one of QUANTIZE_MODES (pipelines.quantize)
    step_cache: int = 0  # decoder UNet: recompute the deep blocks every N steps (pipelines.step_cache); 0: off


def warmup_batches_for(largest: int) -> tuple[int, ...]:
    """Batch sizes to compile at load so that no batch of up to ``largest`` images compiles later.

    The first size compiles a static graph, the second a graph with the batch
    dimension symbolic; torch still compiles large batches apart (on a CPU,
    convolutions from 16 rows on, i.e. 8 images with guidance), so the largest
    batch is warmed up too.
    """
    return tuple(sorted({1, 2, largest}))


def canonical_dtype(name: str) -> str:
    """``float32``, ``float16`` or ``bfloat16`` for a dtype name or alias (``fp16``, ``bf16``...); else ValueError."""
    word = DTYPE_ALIASES.get(name.strip().lower(), name.strip().lower())
    if word not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}: use one of {', '.join(DTYPE_NAMES)}")
    return word


def _items(value: Any) -> list[str]:
    """Comma-separated text, or a TOML list of strings, as trimmed non-empty items."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise ValueError(f"expected comma-separated text or a list of strings, got {value!r}")
    return [item.strip() for item in items if item.strip()]


def parse_enabled(value: Any) -> frozenset[str] | None:
    """``auto`` (None: the device's defaults), ``none``, or names from OPTIMIZATIONS."""
    names = [name.lower() for name in _items(value)]
    if names == ["auto"]:
        return None
    if names == ["none"]:
        return frozenset()
    unknown = sorted(set(names) - set(OPTIMIZATIONS))
    if unknown or not names:
        shown = ", ".join(unknown) or "nothing"
        raise ValueError(f"unknown optimization {shown}: use auto, none or any of {', '.join(OPTIMIZATIONS)}")
    return frozenset(names)


def parse_warmup_batches(value: Any) -> tuple[int, ...]:
    """Positive batch sizes: ``1,2`` (or a TOML list of integers)."""
    items = value if isinstance(value, list) else _items(value)
    whole = [item for item in items if isinstance(item, str) and item.isdigit() or type(item) is int]
    if not items or len(whole) != len(items) or min(int(item) for item in whole) < 1:
        raise ValueError(f"expected positive batch sizes like 1,2, got {value!r}")
    return tuple(int(item) for item in whole)


def parse_quantize(value: Any) -> str:
    """``none``, ``int8`` or ``fp8``."""
    word = value.strip().lower() if isinstance(value, str) else value
    if word not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantization {value!r}: use one of {', '.join(QUANTIZE_MODES)}")
    return str(word)


def parse_step_cache(value: Any) -> int:
    """0 (off) or the interval N >= 1 at which the decoder's deep blocks are recomputed (1: every step)."""
    text = value.strip() if isinstance(value, str) else value
    if isinstance(text, str) and text.isdigit():
        text = int(text)
    if type(text) is not int or text < 0:
        raise ValueError(f"expected 0 (off) or a whole number of steps N >= 1, got {value!r}")
    return text


def parse_family_dtypes(value: Any) -> tuple[tuple[str, str], ...]:
    """``karlo=float16,kandinsky22=bfloat16`` (or a TOML table) as sorted (family, dtype) pairs."""
    pairs = list(value.items()) if isinstance(value, dict) else [item.partition("=")[::2] for item in _items(value)]
    chosen: dict[str, str] = {}
    for family, dtype in pairs:
        if family not in FAMILIES or not isinstance(dtype, str) or not dtype:
            shown = f"{family}={dtype}" if dtype else family
            raise ValueError(f"expected FAMILY=DTYPE with FAMILY one of {', '.join(FAMILIES)}, got {shown!r}")
        chosen[family] = canonical_dtype(dtype)
    return tuple(sorted(chosen.items()))
