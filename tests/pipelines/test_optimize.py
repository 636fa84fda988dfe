"""Load-time speed settings (pipelines/optimize.py): each one gives the stock pipeline's images, on CPU tiny models.

The tolerance: every eager optimisation stays within MAX_PIXEL_DIFFERENCE
levels (of 255) of the stock pipeline for the same seed, in float32. The
measured differences are smaller (docs/performance.md, "Correctness").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnAddedKVProcessor, AttnProcessor

from pipelines import optimize
from pipelines.base import ImageJob, StagePreset, Ticket
from pipelines.loader import load_backend
from pipelines.optimize import FusedAddedKVAttention, is_compiled, pipeline_models, resolve
from pipelines.speed import OPTIMIZATIONS, SpeedOptions, parse_enabled
from pipelines.tiny import build_tiny_kandinsky, build_tiny_karlo

MAX_PIXEL_DIFFERENCE = 2
KANDINSKY_FAST = StagePreset(prior_steps=2, prior_guidance=4.0, decoder_steps=4, decoder_guidance=4.0)
KANDINSKY_INTERVAL = StagePreset(
    prior_steps=2, prior_guidance=4.0, decoder_steps=4, decoder_guidance=4.0, decoder_guidance_min_timestep=600
)
KARLO_FAST = StagePreset(prior_steps=2, prior_guidance=4.0, decoder_steps=3, decoder_guidance=8.0, super_res_steps=2)
EAGER_VARIANTS = {
    "math attention": frozenset(),
    "channels_last": frozenset({"sdpa", "channels_last"}),
    "fused_qkv": frozenset({"sdpa", "fused_qkv"}),
    "all eager": frozenset({"sdpa", "channels_last", "fused_qkv"}),
}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("optimize-models")
    return {"kandinsky22": build_tiny_kandinsky(root / "kandinsky"), "karlo": build_tiny_karlo(root / "karlo")}


def _pixels(model_dirs, family: str, enabled: frozenset[str] | None, n: int = 2, preset=None) -> np.ndarray:
    backend = load_backend("t", family, model_dirs[family], device="cpu", optimize=SpeedOptions(enabled, None, (1,)))
    side = 64
    preset = preset or (KANDINSKY_FAST if family == "kandinsky22" else KARLO_FAST)
    job = ImageJob(task="generate", n=n, width=side, height=side, seeds=[11, 12][:n], preset=preset, prompt="a cat")
    return np.stack([np.asarray(image, dtype=np.int16) for image in backend.run(job)])


@pytest.fixture(scope="module")
def stock(model_dirs):
    return {family: _pixels(model_dirs, family, None) for family in ("kandinsky22", "karlo")}


def test_defaults_are_the_stock_choices_and_bad_combinations_are_refused():
    assert resolve(None, CPU) == {"sdpa"}
    assert resolve(frozenset(), CPU) == frozenset()
    assert resolve(frozenset({"sdpa", "max_autotune"}), CPU) == {"sdpa", "max_autotune", "compile"}
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        resolve(frozenset({"sdpa", "cuda_graphs"}), CPU)
    with pytest.raises(ValueError, match="enable sdpa"):
        resolve(frozenset({"fused_qkv"}), CPU)
    with pytest.raises(ValueError, match="unknown optimization"):
        resolve(frozenset({"warp_speed"}), CPU)


def test_parse_enabled():
    assert parse_enabled("auto") is None
    assert parse_enabled("none") == frozenset()
    assert parse_enabled(" sdpa, fused_qkv ") == {"sdpa", "fused_qkv"}
    assert parse_enabled(["sdpa", "compile"]) == {"sdpa", "compile"}  # a TOML list
    assert parse_enabled(",".join(OPTIMIZATIONS)) == set(OPTIMIZATIONS)
    with pytest.raises(ValueError, match="unknown optimization tensorrt"):
        parse_enabled("sdpa,tensorrt")


@pytest.mark.parametrize("family", ["kandinsky22", "karlo"])
@pytest.mark.parametrize("variant", list(EAGER_VARIANTS))
def test_each_eager_optimization_gives_the_stock_images(model_dirs, stock, family, variant):
    pixels = _pixels(model_dirs, family, EAGER_VARIANTS[variant])
    assert pixels.shape == stock[family].shape
    assert np.abs(pixels - stock[family]).max() <= MAX_PIXEL_DIFFERENCE


def _eager_compile(monkeypatch) -> None:
    # Dynamo traces the real models (graph breaks, guards, recompiles) but generates no kernels: Inductor
    # takes minutes per graph on this CPU. The GPU benchmark compiles with Inductor.
    monkeypatch.setattr(optimize, "COMPILE_BACKEND", "eager")


def test_compiled_karlo_gives_the_stock_images_and_compiles_at_load(model_dirs, stock, monkeypatch, tmp_path):
    _eager_compile(monkeypatch)
    runs = []
    monkeypatch.setattr(optimize, "warm_up", lambda backend, batches: runs.append(batches) or list(batches))
    enabled = frozenset({"sdpa", "channels_last", "fused_qkv", "compile"})
    options = SpeedOptions(enabled, tmp_path / "cache", (1, 2))
    backend = load_backend("t", "karlo", model_dirs["karlo"], device="cpu", optimize=options)
    assert runs == [(1, 2)]
    assert backend.info.optimizations == {"enabled": sorted(enabled), "warmed_up_batches": [1, 2]}
    assert (tmp_path / "cache").is_dir()
    assert any(is_compiled(m) for m in pipeline_models(optimize.backend_pipelines(backend))), "nothing compiled"
    job = ImageJob(task="generate", n=2, width=64, height=64, seeds=[11, 12], preset=KARLO_FAST, prompt="a cat")
    pixels = np.stack([np.asarray(image, dtype=np.int16) for image in backend.run(job)])
    assert np.abs(pixels - stock["karlo"]).max() <= MAX_PIXEL_DIFFERENCE


def test_compiled_kandinsky_after_its_warm_up_compiles_nothing_for_the_batches_the_engine_merges(
    model_dirs, stock, monkeypatch, tmp_path
):
    """Warm-up at 1, 2 and the largest batch (here 8 images, the CPU's --max-batch-images): the UNet sees 16
    rows with guidance, which torch compiles apart from 2-15 rows; then no batch up to 8 images compiles, and
    the compiled models still give the stock images. Stage timing hooks run around the compiled code."""
    from torch._dynamo.utils import counters

    _eager_compile(monkeypatch)
    enabled = frozenset({"sdpa", "channels_last", "fused_qkv", "compile"})
    options = SpeedOptions(enabled, tmp_path / "cache", (1, 2, 8))
    backend = load_backend("t", "kandinsky22", model_dirs["kandinsky22"], device="cpu", optimize=options)
    assert backend.info.optimizations == {"enabled": sorted(enabled), "warmed_up_batches": [1, 2, 8]}
    assert all(is_compiled(m) for m in (backend.prior_pipe.prior, backend.decoder_pipe.unet))
    assert is_compiled(backend.decoder_pipe.movq.decoder)
    graphs_after_warm_up = counters["stats"]["unique_graphs"]
    for sizes in [(3,), (4, 4), (1, 2, 5)]:
        jobs = [ImageJob("generate", n, 64, 64, list(range(n)), KANDINSKY_FAST, prompt="a cat") for n in sizes]
        result = backend.run_batch([Ticket(job) for job in jobs])
        assert [len(images) for images in result.outcomes] == list(sizes)
        assert result.stage_seconds["decoder"] > 0 and result.stage_seconds["image_decode"] > 0
    assert counters["stats"]["unique_graphs"] == graphs_after_warm_up
    job = ImageJob(task="generate", n=2, width=64, height=64, seeds=[11, 12], preset=KANDINSKY_FAST, prompt="a cat")
    pixels = np.stack([np.asarray(image, dtype=np.int16) for image in backend.run(job)])
    assert np.abs(pixels - stock["kandinsky22"]).max() <= MAX_PIXEL_DIFFERENCE


def test_warm_up_runs_one_short_job_per_batch_size(model_dirs, monkeypatch):
    backend = load_backend("t", "kandinsky22", model_dirs["kandinsky22"], device="cpu")
    jobs = []
    monkeypatch.setattr(backend, "run", lambda job: jobs.append(job) or [])
    assert optimize.warm_up(backend, (1, 3)) == [1, 3]
    assert [(job.n, job.width, job.height) for job in jobs] == [(1, 64, 64), (3, 64, 64)]
    assert {(job.preset.prior_steps, job.preset.decoder_steps) for job in jobs} == {(2, 2)}


def test_guidance_interval_keeps_its_result_with_fused_attention(model_dirs):
    enabled = frozenset({"sdpa", "channels_last", "fused_qkv"})
    reference = _pixels(model_dirs, "kandinsky22", None, preset=KANDINSKY_INTERVAL)
    pixels = _pixels(model_dirs, "kandinsky22", enabled, preset=KANDINSKY_INTERVAL)
    assert np.abs(pixels - reference).max() <= MAX_PIXEL_DIFFERENCE


def test_fused_projections_replace_the_separate_ones_with_the_same_parameter_count(model_dirs):
    backend = load_backend("t", "kandinsky22", model_dirs["kandinsky22"], device="cpu", optimize=SpeedOptions())
    unet = backend.decoder_pipe.unet
    before = sum(p.numel() for p in unet.parameters())
    optimize.fuse_qkv(unet)
    assert sum(p.numel() for p in unet.parameters()) == before
    attentions = [m for m in unet.modules() if isinstance(m, Attention)]
    assert attentions and all(isinstance(a.processor, FusedAddedKVAttention) for a in attentions)
    assert all(hasattr(a, "to_qkv") and not hasattr(a, "to_k") and not hasattr(a, "add_k_proj") for a in attentions)


def test_math_attention_sets_the_classic_processors(model_dirs):
    backend = load_backend("t", "kandinsky22", model_dirs["kandinsky22"], device="cpu", optimize=SpeedOptions())
    optimize.set_attention(backend.decoder_pipe.unet, sdpa=False)
    optimize.set_attention(backend.prior_pipe.prior, sdpa=False)
    optimize.set_attention(backend.prior_pipe.text_encoder, sdpa=False)
    assert {type(m.processor) for m in backend.decoder_pipe.unet.modules() if isinstance(m, Attention)} == {
        AttnAddedKVProcessor
    }
    assert {type(m.processor) for m in backend.prior_pipe.prior.modules() if isinstance(m, Attention)} == {
        AttnProcessor
    }
    assert backend.prior_pipe.text_encoder.config._attn_implementation == "eager"


def test_attention_cannot_be_reset_once_fused(model_dirs):
    backend = load_backend("t", "kandinsky22", model_dirs["kandinsky22"], device="cpu")
    optimize.fuse_qkv(backend.decoder_pipe.unet)
    with pytest.raises(ValueError, match="already fused"):
        optimize.set_attention(backend.decoder_pipe.unet, sdpa=True)


def test_an_unknown_attention_processor_is_refused(model_dirs):
    backend = load_backend("t", "kandinsky22", model_dirs["kandinsky22"], device="cpu")
    attention = next(m for m in backend.decoder_pipe.unet.modules() if isinstance(m, Attention))
    attention.set_processor(object())
    with pytest.raises(ValueError, match="not optimizable"):
        optimize.fuse_qkv(backend.decoder_pipe.unet)


def test_cuda_graphs_on_the_cpu_are_refused_before_loading(model_dirs):
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        load_backend(
            "t", "karlo", model_dirs["karlo"], device="cpu", optimize=SpeedOptions(frozenset({"sdpa", "cuda_graphs"}))
        )


def test_compile_mode_follows_the_settings():
    assert optimize.compile_mode(frozenset({"compile"})) == "default"
    assert optimize.compile_mode(frozenset({"compile", "cuda_graphs"})) == "reduce-overhead"
    assert optimize.compile_mode(frozenset({"compile", "max_autotune"})) == "max-autotune-no-cudagraphs"
    assert optimize.compile_mode(frozenset({"compile", "max_autotune", "cuda_graphs"})) == "max-autotune"
