"""Weight-only quantization of large layers, once, at load (docs/performance.md, "Weight quantization").

``int8`` stores each large weight as 8-bit integers with one scale per output
channel; ``fp8`` stores it as float8 (e4m3) with one scale per output channel.
Activations and arithmetic stay in the model's dtype: only the weights shrink,
so memory drops while the images change by rounding only (the trade-off
benchmark prices it in accuracy points).

Linear layers go through torchao, PyTorch's quantization library. torchao has
no weight-only path for convolutions, so the UNets' convolutions use
:class:`QuantizedConv2d` here: the same per-channel scheme, dequantized one
layer at a time as it runs. Layers under :data:`MIN_WEIGHT_ELEMENTS` weights
stay as they are: for them the scales and the dequantizing cost more than the
bytes saved. The MoVQ (the image decoder) is left whole: it runs once per
image, and its convolutions write the output pixels directly.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel
from transformers import PreTrainedModel

from .speed import QUANTIZE_MODES

MIN_WEIGHT_ELEMENTS = 4096  # a 64x64 matrix: smaller layers stay in full precision
FP8_MIN_CAPABILITY = (8, 9)  # Ada and Hopper: the first NVIDIA GPUs with float8 support
QUANTIZED_MODELS = (PriorTransformer, UNet2DConditionModel, UNet2DModel, PreTrainedModel)
INT8_LIMIT = 127.0
FP8_LIMIT = 448.0  # the largest finite float8_e4m3fn


@dataclass(frozen=True)
class QuantizeReport:
    """What quantizing did, for /v1/models and the logs."""

    mode: str
    layers: int  # weights replaced by quantized ones
    weight_bytes_before: int  # of the models quantization looked at
    weight_bytes_after: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "layers": self.layers,
            "weight_bytes_before": self.weight_bytes_before,
            "weight_bytes_after": self.weight_bytes_after,
        }


def check_supported(mode: str, device: torch.device) -> None:
    """Refuse, in one line, a mode this device cannot run (ValueError), before anything loads."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantization {mode!r}: use one of {', '.join(QUANTIZE_MODES)}")
    if mode != "fp8":
        return
    if device.type != "cuda":
        raise ValueError(
            f"fp8 quantization needs an NVIDIA GPU with float8 support (compute capability 8.9+), not {device}"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        shown = ".".join(map(str, capability))
        raise ValueError(f"fp8 quantization needs compute capability 8.9+ (Ada, Hopper); {device} has {shown}")


def quantize_models(
    models: list[torch.nn.Module], mode: str, compute_dtype: torch.dtype | None = None
) -> QuantizeReport:
    """Quantize the large layers of the denoisers and text/image encoders among ``models``, in place.

    ``compute_dtype``: widen each large layer to it just before quantizing it, one layer at a time, so the
    quantized layer computes in it (float32 for half-precision weights on a CPU without half-precision
    instructions: :mod:`pipelines.compute_dtype`); None: quantize in the stored dtype.
    """
    targets = [model for model in models if isinstance(model, QUANTIZED_MODELS)]
    before = sum(weight_bytes(model) for model in targets)
    if mode == "none":
        return QuantizeReport(mode, 0, before, before)
    layers = 0
    for model in targets:
        layers += _quantize_linears(model, mode, compute_dtype)
        if isinstance(model, (UNet2DConditionModel, UNet2DModel)):
            layers += _quantize_convolutions(model, mode, compute_dtype)
    _return_freed_memory()
    return QuantizeReport(mode, layers, before, sum(weight_bytes(model) for model in targets))


def _return_freed_memory() -> None:
    """Hand the replaced full-precision weights back to the OS.

    glibc keeps freed heap memory for reuse, and most weights are below its mmap threshold: without this, a
    real-size decoder UNet quantized from bfloat16 held 1.0-1.8 GB more than its codes and scales
    (docs/performance.md, "At real size").
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc's; absent from other C libraries
        if trim is not None:
            trim(0)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as stored (a quantized weight: its codes and scales)."""
    return sum(_tensor_bytes(tensor) for tensor in (*model.parameters(), *model.buffers()))


def _tensor_bytes(tensor: torch.Tensor) -> int:
    inner = getattr(tensor, "__tensor_flatten__", None)
    if inner is None:
        return tensor.numel() * tensor.element_size()
    names, _ = inner()  # a torchao tensor subclass: count the tensors it is made of
    return sum(_tensor_bytes(getattr(tensor, name)) for name in names)


def _is_large(layer: torch.nn.Module) -> bool:
    return layer.weight.numel() >= MIN_WEIGHT_ELEMENTS


def is_quantized(layer: torch.nn.Module) -> bool:
    """Whether ``layer`` is a linear layer whose weight torchao has replaced by its quantized tensor."""
    weight = getattr(layer, "weight", None) if isinstance(layer, torch.nn.Linear) else None
    return weight is not None and hasattr(weight, "__tensor_flatten__")


def _quantize_linears(model: torch.nn.Module, mode: str, compute_dtype: torch.dtype | None = None) -> int:
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_

    chosen = [name for name, layer in model.named_modules() if isinstance(layer, torch.nn.Linear) and _is_large(layer)]
    if not chosen:
        return 0
    wanted = set(chosen)
    # set_inductor_config=False: torchao would otherwise change torch.compile's global settings.
    config = (
        Int8WeightOnlyConfig(set_inductor_config=False)
        if mode == "int8"
        else Float8WeightOnlyConfig(set_inductor_config=False)
    )
    if compute_dtype is None:
        quantize_(model, config, filter_fn=lambda _module, name: name in wanted)
        return len(chosen)
    for name in chosen:  # one layer at a time: only one is ever held widened
        layer = model.get_submodule(name).to(compute_dtype)
        quantize_(layer, config, filter_fn=lambda module, _name, layer=layer: module is layer)
    return len(chosen)


def _quantize_convolutions(model: torch.nn.Module, mode: str, compute_dtype: torch.dtype | None = None) -> int:
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Conv2d and _is_large(child):
                widened = child if compute_dtype is None else child.to(compute_dtype)
                setattr(parent, name, QuantizedConv2d.from_conv(widened, mode))
                replaced += 1
    return replaced


class QuantizedConv2d(torch.nn.Module):
    """A Conv2d whose weight is stored as int8 or float8 codes with one scale per output channel."""

    def __init__(self, conv: torch.nn.Conv2d, codes: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.in_channels, self.out_channels, self.kernel_size = conv.in_channels, conv.out_channels, conv.kernel_size
        if conv.padding_mode != "zeros":
            raise ValueError(f"cannot quantize a convolution with padding_mode={conv.padding_mode!r}")
        self.compute_dtype = conv.weight.dtype
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.bias = conv.bias

    @classmethod
    @torch.no_grad()
    def from_conv(cls, conv: torch.nn.Conv2d, mode: str) -> QuantizedConv2d:
        weight = conv.weight.detach().float()
        limit = INT8_LIMIT if mode == "int8" else FP8_LIMIT
        peak = weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
        scales = peak / limit
        if mode == "int8":
            codes = torch.round(weight / scales).clamp(-INT8_LIMIT, INT8_LIMIT).to(torch.int8)
        else:
            codes = (weight / scales).to(torch.float8_e4m3fn)
        return cls(conv, codes, scales.to(conv.weight.dtype))

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight, in the dtype the layer computes in."""
        return self.codes.to(self.compute_dtype) * self.scales

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.conv2d(hidden, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
