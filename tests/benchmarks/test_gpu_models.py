"""The real-shape pipelines of benchmarks/gpu_models.py match the published checkpoints, built on the meta device.

A ``meta`` tensor has a shape and no storage, so the 4.9 B- and 3.4 B-parameter
models are built here in seconds without memory; their parameter counts must
match the published ones (three significant figures), and their UNets' FLOPs
the reference estimate, so the GPU benchmark measures the real models' work.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.gpu_models import PUBLISHED_PARAMETERS, kandinsky22_movq, real_kandinsky_models, real_karlo_models
from pipelines.model_config import kandinsky_native_size, read_easel_config


def _counts(models: dict[str, torch.nn.Module]) -> dict[str, float]:
    return {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}


@pytest.mark.parametrize("family", ["kandinsky22", "karlo"])
def test_parameter_counts_match_the_published_checkpoints(family):
    with torch.device("meta"):
        models = real_kandinsky_models(49407) if family == "kandinsky22" else real_karlo_models(49407)
    counts = _counts(models)
    for name, published in PUBLISHED_PARAMETERS[family].items():
        assert counts[name] == pytest.approx(published, rel=0.005), name
    total = sum(counts.values())
    assert total == pytest.approx(4.9e9 if family == "kandinsky22" else 3.4e9, rel=0.02)


def test_kandinsky_decoder_work_at_768_matches_the_reference_estimate():
    """About 212 TFLOP per 768x768 image with 50 guided decoder steps (the reference notes' estimate)."""
    with torch.device("meta"):
        models = real_kandinsky_models(49407)
        unet, movq = models["unet"], kandinsky22_movq()
        latents = torch.zeros(2, 4, 96, 96)  # 768 / 8, the unconditional and conditional rows
        with FlopCounterMode(display=False) as unet_counter:
            unet(latents, 999, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": torch.zeros(2, 1280)})
        with FlopCounterMode(display=False) as movq_counter:
            movq.decode(latents[:1], force_not_quantize=True)
    per_image = 50 * unet_counter.get_total_flops() + movq_counter.get_total_flops()
    assert per_image / 1e12 == pytest.approx(212, rel=0.05)


def test_the_real_pipelines_assemble_in_the_dtype_asked_for(tmp_path):
    from benchmarks.gpu_models import build_real_kandinsky, build_real_karlo

    meta = torch.device("meta")
    kandinsky = build_real_kandinsky(meta, torch.bfloat16)
    assert kandinsky.unet.dtype == torch.bfloat16 and kandinsky.prior_text_encoder.dtype == torch.bfloat16
    assert kandinsky.decoder_pipe.movq_scale_factor == 8  # 768 px -> 96 latents
    # Without an easel.json (as published), the native size its configs declare is the 512x512 it always had.
    unet_sample, movq_blocks = kandinsky.unet.config.sample_size, len(kandinsky.movq.config.block_out_channels)
    assert kandinsky_native_size(read_easel_config(tmp_path), unet_sample, movq_blocks) == (512, 512)
    karlo = build_real_karlo(meta, torch.float16)
    assert karlo.super_res_last.dtype == torch.float16 and karlo.super_res_first.config.sample_size == 256
    assert karlo.decoder.config.sample_size == 64
