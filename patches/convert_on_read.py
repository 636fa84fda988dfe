"""diffusers and transformers: weights converted to the serving dtype as they are read, at the cost of one copy.

Both libraries read a ``.bin`` weight file with ``torch.load(mmap=True)``, and diffusers reads a safetensors file
with ``safetensors.torch.load_file``, which maps it too: the tensors are pages of the file, mapped into the process.
When the file's dtype is the serving dtype, the module's weights are those pages, which is as small as loading can
be. When it is not (the hub's float32 files served in bfloat16, its float16 image encoder served in float32 or
bfloat16) each tensor is copied in the new dtype, and every page of the file it was read from stays mapped, counted
in the process's RSS, until the whole file has been read: a float32 UNet loaded in bfloat16 peaks at three times
its bfloat16 size.

While :func:`converting_to` is active, each library's ``load_state_dict`` (the one function both call per weight
file) hands back the file's tensors already converted, one at a time, and tells the kernel after each one that
the file pages it was read from are no longer needed (``madvise(MADV_DONTNEED)``: the mapping is never written, so
the pages simply leave the process; they stay in the page cache, and a page touched again is read back from the
file). The libraries then find every tensor in the dtype they would have converted it to, and keep it as it is.
The values are those of the same ``.to(dtype)`` the libraries call, so the weights are bit-identical; only the
peak memory changes. Files already in the serving dtype, and anything not mapped from the file, are left exactly
as the libraries read them. (transformers reads a safetensors file through its own lazy slices, not
``load_state_dict``, so it is not covered; the hub's transformers components are ``.bin`` files.)
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

from .versions import VersionRange, check

DIFFUSERS = VersionRange("diffusers", "0.42", "0.43", "diffusers.models.model_loading_utils.load_state_dict", __name__)
TRANSFORMERS = VersionRange("transformers", "5.23", "6", "transformers.modeling_utils.load_state_dict", __name__)
MADV_DONTNEED = 4  # Linux's value (asm-generic/mman-common.h)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

_target: ContextVar[torch.dtype | None] = ContextVar("easel_convert_on_read", default=None)


@contextmanager
def converting_to(dtype: torch.dtype) -> Iterator[None]:
    """While the block runs, ``.bin`` weight files read by diffusers and transformers arrive in ``dtype``."""
    check(DIFFUSERS)
    check(TRANSFORMERS)
    _install()
    token = _target.set(dtype)
    try:
        yield
    finally:
        _target.reset(token)


def _install() -> None:
    """Wrap each library's ``load_state_dict`` once; the wrapper does nothing outside :func:`converting_to`.

    diffusers' ``modeling_utils`` imports the function by name and calls that name for a single weight file, so
    its copy is wrapped too: once it has been imported (every backend imports it) the module's own would not do.
    """
    from diffusers.models import model_loading_utils
    from diffusers.models import modeling_utils as diffusers_models
    from transformers import modeling_utils

    for module in (model_loading_utils, diffusers_models, modeling_utils):
        if not getattr(module.load_state_dict, "_easel_converts", False):
            module.load_state_dict = _converting(module.load_state_dict)


def _converting(load_state_dict: Callable[..., Any]) -> Callable[..., Any]:
    def load(checkpoint_file: Any, *args: Any, **kwargs: Any) -> Any:
        state = load_state_dict(checkpoint_file, *args, **kwargs)
        dtype = _target.get()
        if dtype is None or not isinstance(checkpoint_file, str | os.PathLike) or not isinstance(state, dict):
            return state
        return convert_releasing(state, dtype, mapped_ranges(str(checkpoint_file)))

    load._easel_converts = True  # type: ignore[attr-defined]
    return load


def convert_releasing(state: dict[str, Any], dtype: torch.dtype, mapped: list[tuple[int, int]]) -> dict[str, Any]:
    """``state`` with its floating tensors in ``dtype``, each source's pages within ``mapped`` released as it goes."""
    converted = type(state)()
    if hasattr(state, "_metadata"):
        converted._metadata = state._metadata  # type: ignore[attr-defined]
    for name in list(state):
        tensor = state.pop(name)
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.dtype != dtype:
            copy = tensor.to(dtype)
            release_pages(tensor, mapped)
            tensor = copy
        converted[name] = tensor
    return converted


def mapped_ranges(path: str) -> list[tuple[int, int]]:
    """The address ranges where ``path`` is mapped into this process (Linux; elsewhere none, so nothing is
    released)."""
    if not sys.platform.startswith("linux"):
        return []
    target = os.path.realpath(path)
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].rstrip("\n") == target:
                start, end = (int(part, 16) for part in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def release_pages(tensor: torch.Tensor, mapped: list[tuple[int, int]]) -> None:
    """Drop the whole pages of ``tensor``'s storage that lie in a file mapping from this process's memory.

    Only pages inside ``mapped`` are touched: on anonymous memory ``MADV_DONTNEED`` would zero them.
    """
    storage = tensor.untyped_storage()
    begin, end = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
    for start, stop in mapped:
        low = -(-max(begin, start) // _PAGE) * _PAGE  # whole pages only: a neighbour may share the edge pages
        high = min(end, stop) // _PAGE * _PAGE
        if high > low:
            _libc().madvise(ctypes.c_void_p(low), ctypes.c_size_t(high - low), MADV_DONTNEED)


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)
