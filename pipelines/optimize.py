"""Speed settings applied to a loaded backend, once, at load time (docs/performance.md, "Fast on a GPU").

Every diffusers pipeline a backend holds is found among its attributes and its
models are changed in place: attention implementation, memory layout, fused
projections, ``torch.compile`` (optionally with CUDA graphs). With compile on,
the backend then runs one short job per warm-up batch size, so compiling is
paid at load and never by a request. Nothing here changes what a request
computes, only how: :func:`optimize_backend` must give the same images as the
stock pipeline up to rounding (tests/pipelines/test_optimize.py measures it).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, PriorTransformer, UNet2DConditionModel, UNet2DModel, VQModel
from diffusers.models.attention_processor import (
    Attention,
    AttnAddedKVProcessor,
    AttnAddedKVProcessor2_0,
    AttnProcessor,
    AttnProcessor2_0,
    FusedAttnProcessor2_0,
)
from transformers import PreTrainedModel

from patches.torch import cache_compiled_graphs

from .base import ImageBackend, ImageJob
from .savings import apply_savings
from .speed import OPTIMIZATIONS, STEP_CACHE_FAMILIES, SpeedOptions
from .tasks import Task

log = logging.getLogger("easel.optimize")

# Until a GPU run of benchmarks/bench_gpu.py measures the others, the defaults are the stock pipeline's
# own choices: SDPA attention (diffusers' default on torch 2) and the dtype from pipelines.device.
DEFAULTS: dict[str, frozenset[str]] = {"cuda": frozenset({"sdpa"}), "other": frozenset({"sdpa"})}
NEEDS_COMPILE = ("max_autotune", "cuda_graphs")
DENOISERS = (UNet2DConditionModel, UNet2DModel, PriorTransformer)
CONVOLUTIONAL = (UNet2DConditionModel, UNet2DModel, VQModel)
# Inductor generates kernels; tests and the CPU-tiny benchmark name "eager" (Dynamo's tracing and guards
# without code generation), since Inductor takes minutes per graph on a 2-core CPU.
COMPILE_BACKEND = "inductor"
WARMUP_STEPS = 2  # enough for every shape a job passes (a guidance interval halves the batch part-way)


def resolve(requested: frozenset[str] | None, device: torch.device) -> frozenset[str]:
    """The optimisations to apply on ``device``: the defaults, or ``requested`` checked (ValueError)."""
    if requested is None:
        return DEFAULTS["cuda" if device.type == "cuda" else "other"]
    unknown = sorted(requested - set(OPTIMIZATIONS))
    if unknown:
        raise ValueError(f"unknown optimization {', '.join(unknown)} (known: {', '.join(OPTIMIZATIONS)})")
    enabled = set(requested)
    if enabled & set(NEEDS_COMPILE):
        enabled.add("compile")
    if "cuda_graphs" in enabled and device.type != "cuda":
        raise ValueError(f"cuda_graphs needs a CUDA device, not {device}")
    if "fused_qkv" in enabled and "sdpa" not in enabled:
        raise ValueError("fused_qkv runs its attention through SDPA: enable sdpa with it")
    return frozenset(enabled)


def optimize_backend(backend: ImageBackend, options: SpeedOptions) -> ImageBackend:
    """Apply ``options`` to every model of ``backend`` in place; its ``info`` then says what is on."""
    enabled = resolve(options.enabled, torch.device(backend.info.device))
    if "compile" in enabled:
        use_compile_cache(options.compile_cache_dir)
    pipelines = backend_pipelines(backend)
    optimize_pipelines(pipelines, enabled)  # compiling is lazy: quantizing after it still takes effect
    savings = apply_savings(backend, options, pipeline_models(pipelines))
    warmed = warm_up(backend, options.warmup_batches) if "compile" in enabled else []
    optimizations = {"enabled": sorted(enabled), "warmed_up_batches": warmed, **savings}
    # A request's decoder_step_cache installs the cache on first use (pipelines.step_cache): never into compiled code.
    step_cache = backend.info.family in STEP_CACHE_FAMILIES and "compile" not in enabled
    backend.info = replace(backend.info, optimizations=optimizations, supports_step_cache=step_cache)
    return backend


def optimize_pipelines(pipelines: list[DiffusionPipeline], enabled: frozenset[str]) -> None:
    """Apply resolved optimisations to the models of ``pipelines`` (compiling is lazy: it happens on first use)."""
    for model in pipeline_models(pipelines):
        apply_to_model(model, enabled)
        if "compile" in enabled:
            compile_model(model, enabled)


def backend_pipelines(backend: Any) -> list[DiffusionPipeline]:
    """The diffusers pipelines among a backend's attributes (Kandinsky: prior and decoder; Karlo: one or two)."""
    return [value for value in vars(backend).values() if isinstance(value, DiffusionPipeline)]


def pipeline_models(pipelines: list[DiffusionPipeline]) -> list[torch.nn.Module]:
    """Each distinct model of the pipelines, once (Karlo's variation pipeline shares most of them)."""
    unique: dict[int, torch.nn.Module] = {}
    for pipe in pipelines:
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                unique.setdefault(id(component), component)
    return list(unique.values())


def apply_to_model(model: torch.nn.Module, enabled: frozenset[str]) -> None:
    """Everything but compile, in the order that keeps each step valid (fuse, then lay out)."""
    set_attention(model, sdpa="sdpa" in enabled)
    if "fused_qkv" in enabled:
        fuse_qkv(model)
    if "channels_last" in enabled and isinstance(model, CONVOLUTIONAL):
        model.to(memory_format=torch.channels_last)


# -- attention ----------------------------------------------------------------------------------


def set_attention(model: torch.nn.Module, *, sdpa: bool) -> None:
    """SDPA (torch's fused attention kernels) or the explicit softmax(QK^T)V of the classic processors."""
    if isinstance(model, PreTrainedModel):
        model.set_attn_implementation("sdpa" if sdpa else "eager")
        return
    for attention in attention_modules(model):
        if isinstance(attention.processor, (FusedAttnProcessor2_0, FusedAddedKVAttention)):
            raise ValueError("attention is already fused: set it before fusing, on a freshly loaded model")
        if _has_added_kv(attention):
            attention.set_processor(AttnAddedKVProcessor2_0() if sdpa else AttnAddedKVProcessor())
        else:
            attention.set_processor(AttnProcessor2_0() if sdpa else AttnProcessor())


def attention_modules(model: torch.nn.Module) -> list[Attention]:
    found = [module for module in model.modules() if isinstance(module, Attention)]
    for attention in found:
        if not isinstance(attention.processor, _KNOWN_PROCESSORS):
            # A processor this module does not know could compute something else; refuse rather than replace it.
            raise ValueError(f"{type(model).__name__} uses {type(attention.processor).__name__}, not optimizable")
    return found


def _has_added_kv(attention: Attention) -> bool:
    return isinstance(attention.processor, (AttnAddedKVProcessor, AttnAddedKVProcessor2_0, FusedAddedKVAttention))


@torch.no_grad()
def fuse_qkv(model: torch.nn.Module) -> None:
    """One matrix product for the query, key and value projections of each attention, instead of three.

    diffusers fuses plain self-attention (the prior, the MoVQ) but refuses the
    added-KV attention of Kandinsky's and Karlo's UNets; that one is fused here,
    with the added tokens' key and value fused too. The unfused layers are
    dropped so the weights are not held twice.
    """
    for attention in attention_modules(model):
        if _has_added_kv(attention):
            _fuse_added_kv(attention)
        elif not attention.is_cross_attention:
            attention.fuse_projections()
            for name in ("to_q", "to_k", "to_v"):
                delattr(attention, name)
            attention.set_processor(FusedAttnProcessor2_0())


def _fuse_added_kv(attention: Attention) -> None:
    if not attention.only_cross_attention:
        attention.to_qkv = _concatenated(attention.to_q, attention.to_k, attention.to_v)
        for name in ("to_q", "to_k", "to_v"):
            delattr(attention, name)
    attention.to_added_kv = _concatenated(attention.add_k_proj, attention.add_v_proj)
    for name in ("add_k_proj", "add_v_proj"):
        delattr(attention, name)
    attention.set_processor(FusedAddedKVAttention())


def _concatenated(*layers: torch.nn.Linear) -> torch.nn.Linear:
    first = layers[0]
    has_bias = first.bias is not None
    fused = torch.nn.Linear(
        first.in_features,
        sum(layer.out_features for layer in layers),
        bias=has_bias,
        device=first.weight.device,
        dtype=first.weight.dtype,
    )
    fused.weight.copy_(torch.cat([layer.weight for layer in layers]))
    if has_bias:
        fused.bias.copy_(torch.cat([layer.bias for layer in layers]))
    return fused.requires_grad_(first.weight.requires_grad)


class FusedAddedKVAttention:
    """diffusers' AttnAddedKVProcessor2_0 with fused projections: the image tokens' query, key and value in
    one product, the added (image-embedding) tokens' key and value in another."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        batch, channels = hidden_states.shape[:2]
        tokens = hidden_states.view(batch, channels, -1).transpose(1, 2)
        mask = attn.prepare_attention_mask(attention_mask, tokens.shape[1], batch, out_dim=4)
        if encoder_hidden_states is None:
            encoder_hidden_states = tokens
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        tokens = attn.group_norm(tokens.transpose(1, 2)).transpose(1, 2)
        added_key, added_value = (
            _split_heads(t, attn.heads) for t in attn.to_added_kv(encoder_hidden_states).chunk(2, -1)
        )
        if attn.only_cross_attention:
            query, key, value = _split_heads(attn.to_q(tokens), attn.heads), added_key, added_value
        else:
            query, key, value = (_split_heads(t, attn.heads) for t in attn.to_qkv(tokens).chunk(3, -1))
            # The added tokens come first, as in diffusers' processor (the order is immaterial to attention).
            key = torch.cat([added_key, key], dim=2)
            value = torch.cat([added_value, value], dim=2)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        attended = attended.transpose(1, 2).reshape(batch, -1, channels)
        attended = attn.to_out[1](attn.to_out[0](attended))
        return attended.transpose(-1, -2).reshape(residual.shape) + residual


def _split_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    batch, length, width = tensor.shape
    return tensor.view(batch, length, heads, width // heads).transpose(1, 2)


_KNOWN_PROCESSORS = (
    AttnProcessor,
    AttnProcessor2_0,
    AttnAddedKVProcessor,
    AttnAddedKVProcessor2_0,
    FusedAttnProcessor2_0,
    FusedAddedKVAttention,
)


# -- compile ----------------------------------------------------------------------------------


def compile_mode(enabled: frozenset[str]) -> str:
    """torch.compile's mode: CUDA graphs are its ``reduce-overhead``; ``max-autotune`` searches GEMM kernels."""
    if "max_autotune" in enabled:
        return "max-autotune" if "cuda_graphs" in enabled else "max-autotune-no-cudagraphs"
    return "reduce-overhead" if "cuda_graphs" in enabled else "default"


def compile_model(model: torch.nn.Module, enabled: frozenset[str]) -> None:
    """Compile the models that run every step (the denoisers) and the MoVQ's decoder (the largest single pass).

    Only ``forward`` is compiled, not the module's call: the engine's stage
    clock adds and removes forward hooks on every batch, which then run as
    plain Python around the compiled code instead of being traced, guarded
    on and recompiled for. ``dynamic=None``: the first shape compiles static,
    a second batch size recompiles once with the batch dimension symbolic
    (:func:`pipelines.speed.warmup_batches_for` picks the sizes).
    """
    if not isinstance(model, (*DENOISERS, VQModel)):
        return
    target = model.decoder if isinstance(model, VQModel) else model
    how = {"mode": compile_mode(enabled)} if COMPILE_BACKEND == "inductor" else {"backend": COMPILE_BACKEND}
    target.forward = torch.compile(target.forward, dynamic=None, **how)


def is_compiled(model: torch.nn.Module) -> bool:
    return hasattr(model.forward, "_torchdynamo_orig_callable")


def default_compile_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "easel" / "torch-compile"


def use_compile_cache(directory: Path | None) -> Path:
    """Point Inductor's on-disk caches (FX graphs, Triton kernels) at a directory that survives restarts."""
    path = directory or default_compile_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    cache_compiled_graphs(path)
    return path


def warm_up(backend: ImageBackend, batches: tuple[int, ...]) -> list[int]:
    """Run a short generation per batch size at the native square size, so compiling happens now.

    With CUDA graphs, torch keeps one graph tree per thread: this compiles
    (minutes) but the engine's worker thread still records its own graphs on
    its first job of each shape (a few extra UNet passes, no compiling).
    """
    info = backend.info
    width, height = info.native_size_for(1, 1)
    preset = info.presets["medium"]
    short = replace(preset, prior_steps=WARMUP_STEPS, decoder_steps=WARMUP_STEPS, super_res_steps=WARMUP_STEPS)
    for n in batches:
        started = time.monotonic()
        seeds = list(range(n))
        backend.run(ImageJob(Task.GENERATE, n, width, height, seeds, short, prompt="a warm-up"))
        log.info(
            "%s: compiled for %d image(s) at %dx%d in %.1f s", info.name, n, width, height, time.monotonic() - started
        )
    return list(batches)
