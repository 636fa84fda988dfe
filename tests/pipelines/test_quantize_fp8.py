"""fp8 weight quantization's layer selection and conversion, exercised on a CPU.

Serving refuses fp8 anywhere but an NVIDIA GPU with float8 support (the
refusal is tested in test_savings.py), but torchao's float8 weight-only
tensors also convert and run on a CPU. Calling the quantizer directly, past
that device check, runs the same selection and conversion here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines import quantize
from pipelines.base import ImageJob, StagePreset
from pipelines.loader import load_backend
from pipelines.optimize import backend_pipelines, pipeline_models
from pipelines.quantize import QuantizedConv2d, quantize_models, weight_bytes
from pipelines.tiny import build_tiny_kandinsky

PRESET = StagePreset(prior_steps=2, prior_guidance=4.0, decoder_steps=3, decoder_guidance=4.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_kandinsky(tmp_path_factory.mktemp("fp8") / "kandinsky")


def _pixels(backend) -> np.ndarray:
    job = ImageJob(task="generate", n=1, width=64, height=64, seeds=[3], preset=PRESET, prompt="a red circle")
    return np.stack([np.asarray(image, dtype=np.int16) for image in backend.run(job)])


def test_fp8_converts_the_large_layers_and_runs_on_a_cpu(model_dir, monkeypatch):
    monkeypatch.setattr(quantize, "MIN_WEIGHT_ELEMENTS", 512)  # reach the tiny prior's and encoders' layers too
    backend = load_backend("t", "kandinsky22", model_dir, device="cpu")
    unet = backend.decoder_pipe.unet
    latents, embeds = torch.randn(2, 4, 8, 8), {"image_embeds": torch.randn(2, unet.config.encoder_hid_dim)}
    with torch.inference_mode():
        before = unet(latents, 10, None, added_cond_kwargs=embeds).sample
    models = pipeline_models(backend_pipelines(backend))
    report = quantize_models(models, "fp8")
    assert report.mode == "fp8" and report.layers > 0 and report.weight_bytes_after < report.weight_bytes_before
    convs = [layer for layer in unet.modules() if isinstance(layer, QuantizedConv2d)]
    assert convs and all(conv.codes.dtype == torch.float8_e4m3fn for conv in convs)
    assert all(conv.scales.dtype == torch.float32 and conv.weight.dtype == torch.float32 for conv in convs)
    for model in (backend.prior_pipe.prior, backend.prior_pipe.text_encoder, unet):
        linears = [layer for layer in model.modules() if isinstance(layer, torch.nn.Linear)]
        assert linears and all("Float8" in type(layer.weight).__name__ for layer in linears), type(model).__name__
    assert type(backend.decoder_pipe.movq.decoder.conv_out) is torch.nn.Conv2d  # the MoVQ is left whole
    assert report.weight_bytes_after == sum(weight_bytes(m) for m in models if isinstance(m, quantize.QUANTIZED_MODELS))
    with torch.inference_mode():
        after = unet(latents, 10, None, added_cond_kwargs=embeds).sample
    assert torch.isfinite(after).all()
    relative = ((after - before).norm() / before.norm()).item()
    assert 0 < relative < 0.1, relative  # e4m3 keeps 3 mantissa bits: changed, by rounding only
    first = _pixels(backend)
    assert first.shape == (1, 64, 64, 3) and np.array_equal(first, _pixels(backend))
