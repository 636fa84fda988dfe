"""bfloat16 weights computing in float32 on a CPU without bfloat16 instructions (pipelines.compute_dtype)."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch

from pipelines import compute_dtype
from pipelines.base import ImageJob
from pipelines.compute_dtype import compute_dtype_for, cpu_flags
from pipelines.loader import load_backend
from pipelines.speed import SpeedOptions
from pipelines.tasks import Task

CPU = torch.device("cpu")


@pytest.fixture
def native(monkeypatch):
    """Set whether this CPU appears to compute bfloat16 natively."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr(compute_dtype, "cpu_computes_natively", lambda dtype: value or dtype != torch.bfloat16)

    return set_native


def test_the_cpu_flags_decide(tmp_path, monkeypatch):
    epyc = tmp_path / "epyc"
    epyc.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    sapphire = tmp_path / "sapphire"
    sapphire.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    graviton = tmp_path / "graviton"
    graviton.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert cpu_flags(epyc) == {"fpu", "sse2", "avx2", "avx512f"}
    assert "avx512_bf16" in cpu_flags(sapphire) and "bf16" in cpu_flags(graviton)
    assert cpu_flags(tmp_path / "absent") == frozenset()
    for path, expected in ((epyc, False), (sapphire, True), (graviton, True), (tmp_path / "absent", False)):
        monkeypatch.setattr(compute_dtype, "cpu_flags", lambda path=path: cpu_flags(path))
        assert compute_dtype.cpu_computes_natively(torch.bfloat16) is expected
        assert compute_dtype_for(CPU, torch.bfloat16) == (torch.bfloat16 if expected else torch.float32)
        assert compute_dtype_for(CPU, torch.float32) == torch.float32
        assert compute_dtype_for(CPU, torch.float16) == torch.float16  # float16 keeps its behaviour on a CPU


def _generate(backend, seed: int = 7) -> bytes:
    info = backend.info
    width, height = info.native_size_for(1, 1)
    preset = replace(info.presets["medium"], prior_steps=2, decoder_steps=2, super_res_steps=2)
    (image,) = backend.run(ImageJob(Task.GENERATE, 1, width, height, [seed], preset, prompt="a red circle"))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _hooked(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [layer for layer in model.modules() if getattr(layer, "_diffusers_hook", None) is not None]


def test_kandinsky_stores_bfloat16_and_computes_float32(tiny_model_dirs, native):
    native(False)
    backend = load_backend("k", "kandinsky22", tiny_model_dirs["kandinsky"], device="cpu", dtype="bfloat16")
    assert (backend.info.dtype, backend.info.compute_dtype) == ("bfloat16", "float32")
    unet = backend.decoder_pipe.unet
    hooked = _hooked(unet)
    assert hooked and all(layer.weight.dtype == torch.bfloat16 for layer in hooked)
    first = _generate(backend)
    assert _generate(backend) == first  # the same seed, the same bytes
    assert all(layer.weight.dtype == torch.bfloat16 for layer in hooked)  # narrowed again after running
    for model in (backend.prior_pipe.text_encoder, backend.prior_pipe.image_encoder, backend.decoder_pipe.movq):
        assert _hooked(model), type(model).__name__
    latents = torch.randn(2, unet.config.in_channels, 8, 8)
    embeds = {"image_embeds": torch.randn(2, unet.config.encoder_hid_dim)}
    with torch.inference_mode():
        out = unet(latents, 10, None, added_cond_kwargs=embeds).sample
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize(("dtype", "is_native"), [("float32", False), ("bfloat16", True)])
def test_not_applied_in_float32_or_where_the_cpu_has_bfloat16(tiny_model_dirs, native, dtype, is_native):
    native(is_native)
    backend = load_backend("k", "kandinsky22", tiny_model_dirs["kandinsky"], device="cpu", dtype=dtype)
    assert (backend.info.dtype, backend.info.compute_dtype) == (dtype, None)
    assert not _hooked(backend.decoder_pipe.unet) and not _hooked(backend.prior_pipe.text_encoder)
    assert backend.decoder_pipe.unet.dtype == getattr(torch, dtype)


def test_karlo_runs_in_bfloat16_on_a_cpu_only_computing_in_float32(tiny_model_dirs, native):
    native(False)
    backend = load_backend("karlo", "karlo", tiny_model_dirs["karlo"], device="cpu", dtype="bfloat16")
    assert (backend.info.dtype, backend.info.compute_dtype) == ("bfloat16", "float32")
    for model in (backend.pipe.prior, backend.pipe.decoder, backend.pipe.super_res_first, backend.pipe.text_encoder):
        assert _hooked(model) and all(layer.weight.dtype == torch.bfloat16 for layer in _hooked(model))
    assert _generate(backend) == _generate(backend)
    native(True)  # its super-resolution upscale has no CPU bfloat16 kernel: refused as before
    with pytest.raises(ValueError, match="Karlo cannot run in bfloat16 on the CPU: use float32"):
        load_backend("karlo", "karlo", tiny_model_dirs["karlo"], device="cpu", dtype="bfloat16")


def test_int8_quantizes_from_float32_and_the_rest_is_cast(tiny_model_dirs, native):
    from pipelines.quantize import QuantizedConv2d, is_quantized

    native(False)
    options = SpeedOptions(quantize="int8")
    backend = load_backend("k", "kandinsky22", tiny_model_dirs["kandinsky"], dtype="bfloat16", optimize=options)
    report = backend.info.optimizations["quantize"]
    assert report["mode"] == "int8" and report["layers"] > 0
    assert report["weight_bytes_after"] < report["weight_bytes_before"]
    models = (backend.decoder_pipe.unet, backend.prior_pipe.text_encoder, backend.prior_pipe.image_encoder)
    quantized = [layer for model in models for layer in model.modules() if is_quantized(layer)]
    assert quantized and all(layer.weight.dtype == torch.float32 for layer in quantized)  # dequantizes to float32
    assert not any(getattr(layer, "_diffusers_hook", None) for layer in quantized)
    convolutions = [layer for layer in backend.decoder_pipe.unet.modules() if isinstance(layer, QuantizedConv2d)]
    assert all(layer.codes.dtype == torch.int8 and layer.scales.dtype == torch.float32 for layer in convolutions)
    assert _generate(backend) == _generate(backend)


def test_step_cache_works_and_compiling_or_fusing_is_refused(tiny_model_dirs, native):
    native(False)
    cached = load_backend(
        "k", "kandinsky22", tiny_model_dirs["kandinsky"], dtype="bfloat16", optimize=SpeedOptions(step_cache=2)
    )
    assert cached.info.supports_step_cache and cached.info.optimizations["step_cache"] == 2
    assert _generate(cached) == _generate(cached)
    for enabled in ("fused_qkv", "compile"):
        options = SpeedOptions(enabled=frozenset({"sdpa", enabled}))
        refusal = f"^{enabled} cannot be combined with bfloat16 weights computing in float32"
        with pytest.raises(ValueError, match=refusal):
            load_backend("k", "kandinsky22", tiny_model_dirs["kandinsky"], dtype="bfloat16", optimize=options)
