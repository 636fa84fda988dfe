"""What a model directory's weights weigh, read from the files' headers without loading a tensor.

Per component folder (``unet``, ``prior_prior``, ...): the parameter count,
the dtype(s) the weights are stored in, the bytes on disk, and the bytes they
take in memory once loaded in a chosen serving dtype. ``easel pull`` (which
must not import model code), ``easel models`` and the loader's memory check
all read it.

safetensors files start with a JSON header that lists every tensor's dtype
and shape. ``.bin`` files (pickled torch state dicts, what the 2022-23 hub
repositories hold) are opened with ``torch.load(..., mmap=True,
map_location="meta")``: the pickle is read, the data never is. torch is
imported there only, so the online path stays free of it.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# safetensors' dtype names and torch's, with each one's size in bytes.
_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
DTYPE_BYTES = {
    "float64": 8,
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "int64": 8,
    "int32": 4,
    "int16": 2,
    "int8": 1,
    "uint8": 1,
    "bool": 1,
}
FLOATING = frozenset({"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"})
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
_SHARD = re.compile(r"-\d+-of-\d+\.")


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # torch's name: "float32", "int64", ...
    numel: int
    name: str = ""  # its key in the state dict ("down_blocks.0.resnets.0.conv1.weight")
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class ComponentFootprint:
    """One component folder's weights."""

    folder: str
    files: tuple[str, ...]  # the weight files read, relative to the folder
    tensors: tuple[TensorInfo, ...]
    disk_bytes: int

    @property
    def parameters(self) -> int:
        """Elements of the floating-point tensors (integer buffers such as position ids are not parameters)."""
        return sum(t.numel for t in self.tensors if t.dtype in FLOATING)

    @property
    def stored_dtypes(self) -> tuple[str, ...]:
        return tuple(sorted({t.dtype for t in self.tensors}))

    def memory_bytes(self, dtype: str) -> int:
        """Bytes in memory once loaded with floating-point tensors in ``dtype`` (integer tensors keep theirs)."""
        size = DTYPE_BYTES[dtype]
        return sum(t.numel * (size if t.dtype in FLOATING else DTYPE_BYTES[t.dtype]) for t in self.tensors)


@dataclass(frozen=True)
class ModelFootprint:
    components: tuple[ComponentFootprint, ...]

    @property
    def parameters(self) -> int:
        return sum(c.parameters for c in self.components)

    @property
    def disk_bytes(self) -> int:
        return sum(c.disk_bytes for c in self.components)

    @property
    def stored_dtypes(self) -> tuple[str, ...]:
        return tuple(sorted({d for c in self.components for d in c.stored_dtypes}))

    def memory_bytes(self, dtype: str) -> int:
        return sum(c.memory_bytes(dtype) for c in self.components)

    def component(self, folder: str) -> ComponentFootprint:
        return next(c for c in self.components if c.folder == folder)


def model_footprint(model_dir: Path | str) -> ModelFootprint:
    """Every component folder of ``model_dir`` that holds weights (folders without weights are left out)."""
    model_dir = Path(model_dir)
    found = [component_footprint(folder) for folder in sorted(model_dir.iterdir()) if folder.is_dir()]
    return ModelFootprint(tuple(c for c in found if c.files))


def component_footprint(folder: Path | str) -> ComponentFootprint:
    folder = Path(folder)
    files = weight_files(folder)
    tensors = [info for file in files for info in _read_tensors(folder / file)]
    disk = sum((folder / file).stat().st_size for file in files)
    return ComponentFootprint(folder.name, tuple(files), tuple(tensors), disk)


def weight_files(folder: Path) -> list[str]:
    """The files the libraries would load from ``folder``, as they choose them.

    safetensors before ``.bin``; a shard index names its shards; a variant
    (``model.fp16.safetensors``, ``model.safetensors.index.fp16.json``) only
    when the folder has no plain weights of that format.
    """
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    for suffix in ("safetensors", "bin"):
        for pattern in _CHOICES[suffix]:
            chosen = [n for n in names if pattern.fullmatch(n) and not _SHARD.search(n)]
            if chosen:
                return _expand_index(folder, chosen[0]) if chosen[0].endswith(".json") else chosen[:1]
    return []


# Per format, in the order the libraries prefer: plain index, plain file, variant index, variant file.
_CHOICES = {
    suffix: [
        re.compile(rf"[^.]+\.{suffix}\.index\.json"),
        re.compile(rf"[^.]+\.{suffix}"),
        re.compile(rf"[^.]+\.{suffix}\.index\.[^.]+\.json"),
        re.compile(rf"[^.]+\.[^.]+\.{suffix}"),
    ]
    for suffix in ("safetensors", "bin")
}


def _expand_index(folder: Path, index_name: str) -> list[str]:
    weight_map = json.loads((folder / index_name).read_text()).get("weight_map", {})
    return sorted(set(weight_map.values()))


def _read_tensors(path: Path) -> list[TensorInfo]:
    if path.suffix == ".safetensors":
        return safetensors_tensors(path)
    return bin_tensors(path)


def safetensors_tensors(path: Path) -> list[TensorInfo]:
    """The tensors a safetensors file declares in its header (8 bytes of length, then JSON)."""
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        if length > _MAX_HEADER_BYTES:
            raise ValueError(f"{path}: not a safetensors file (header of {length} bytes)")
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    return [
        TensorInfo(_SAFETENSORS_DTYPES[entry["dtype"]], _numel(entry["shape"]), name, tuple(entry["shape"]))
        for name, entry in header.items()
    ]


def bin_tensors(path: Path) -> list[TensorInfo]:
    """The tensors of a pickled torch state dict, read onto the meta device: shapes and dtypes, no data."""
    import torch  # here only: the online path (cli/pull.py) imports this module without torch

    try:
        state = torch.load(path, mmap=True, weights_only=True, map_location="meta")
    except RuntimeError:  # torch's pre-1.6 format cannot be memory-mapped: read the pickle whole
        state = torch.load(path, weights_only=True, map_location="meta")
    return [
        TensorInfo(str(tensor.dtype).removeprefix("torch."), tensor.numel(), name, tuple(tensor.shape))
        for name, tensor in state.items()
        if isinstance(tensor, torch.Tensor)
    ]


def _numel(shape: list[int]) -> int:
    count = 1
    for side in shape:
        count *= side
    return count
