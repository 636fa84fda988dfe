"""Weight quantization and step caching (pipelines/quantize.py, pipelines/step_cache.py) on CPU tiny models.

Both change the images, by design; what must hold: the same shapes, the same
bytes again for the same seed, nothing touched when off, and a step cache
that recomputes every step giving exactly the uncached images.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipelines import quantize
from pipelines.base import ImageJob, JobControl, StagePreset
from pipelines.errors import Cancelled
from pipelines.loader import load_backend
from pipelines.memory import resident_bytes
from pipelines.optimize import backend_pipelines, pipeline_models
from pipelines.quantize import QuantizedConv2d, check_supported, weight_bytes
from pipelines.speed import SpeedOptions, parse_quantize, parse_step_cache
from pipelines.tiny import build_tiny_kandinsky, build_tiny_karlo
from weights.footprint import model_footprint

# Six decoder steps, the guidance dropped part-way (the batch halves: the cache must recompute there).
PRESET = StagePreset(
    prior_steps=2, prior_guidance=4.0, decoder_steps=6, decoder_guidance=4.0, decoder_guidance_min_timestep=600
)
KARLO_PRESET = StagePreset(prior_steps=2, prior_guidance=4.0, decoder_steps=3, decoder_guidance=8.0, super_res_steps=2)
SETTINGS = {
    "int8": SpeedOptions(quantize="int8"),
    "step cache 2": SpeedOptions(step_cache=2),
    "step cache 3": SpeedOptions(step_cache=3),
    "int8 + step cache 2": SpeedOptions(quantize="int8", step_cache=2),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("savings-models")
    return {"kandinsky22": build_tiny_kandinsky(root / "kandinsky"), "karlo": build_tiny_karlo(root / "karlo")}


def _load(model_dirs, options: SpeedOptions, family: str = "kandinsky22"):
    return load_backend("t", family, model_dirs[family], device="cpu", optimize=options)


def _pixels(backend, *, task: str = "generate", n: int = 2) -> np.ndarray:
    preset = PRESET if backend.info.family == "kandinsky22" else KARLO_PRESET
    job = ImageJob(task=task, n=n, width=64, height=64, seeds=[11, 12][:n], preset=preset, prompt="a red circle")
    return np.stack([np.asarray(image, dtype=np.int16) for image in backend.run(job)])


@pytest.fixture(scope="module")
def plain(model_dirs):
    return _pixels(_load(model_dirs, SpeedOptions()))


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_each_setting_keeps_shapes_and_reproduces_its_bytes(model_dirs, plain, setting):
    backend = _load(model_dirs, SETTINGS[setting])
    first = _pixels(backend)
    assert first.shape == plain.shape == (2, 64, 64, 3)
    assert np.array_equal(first, _pixels(backend))  # same seed, same machine: the same bytes
    # A second load does exactly the same (the quantized weights are a function of the stored ones).
    assert np.array_equal(first, _pixels(_load(model_dirs, SETTINGS[setting])))
    assert not np.array_equal(first, plain)  # it does change the images: it is not silently ignored


def test_off_touches_nothing_and_reports_nothing(model_dirs, plain):
    backend = _load(model_dirs, SpeedOptions(quantize="none", step_cache=0))
    assert backend.info.optimizations == {"enabled": ["sdpa"], "warmed_up_batches": []}
    modules = [
        module for model in pipeline_models([backend.prior_pipe, backend.decoder_pipe]) for module in model.modules()
    ]
    assert not any(isinstance(module, QuantizedConv2d) for module in modules)
    assert all(
        type(p) is torch.nn.Parameter for model in pipeline_models([backend.decoder_pipe]) for p in model.parameters()
    )
    assert getattr(backend.decoder_pipe.unet, "step_cache", None) is None
    assert np.array_equal(_pixels(backend), plain)


def test_a_step_cache_of_one_recomputes_every_step_and_gives_the_plain_bytes(model_dirs, plain):
    backend = _load(model_dirs, SpeedOptions(step_cache=1))
    assert np.array_equal(_pixels(backend), plain)
    cache = backend.decoder_pipe.unet.step_cache
    assert (cache.full_steps, cache.cached_steps) == (6, 0)


def test_a_step_cache_skips_the_deep_blocks_between_full_steps(model_dirs):
    backend = _load(model_dirs, SpeedOptions(step_cache=3))
    calls = []
    mid = backend.decoder_pipe.unet.mid_block
    handle = mid.register_forward_hook(lambda *_: calls.append(1))
    _pixels(backend)
    handle.remove()
    cache = backend.decoder_pipe.unet.step_cache
    assert cache.full_steps + cache.cached_steps == 6
    assert cache.cached_steps >= 2  # six steps at interval 3, with one forced recompute where the batch halves
    # The mid block's module call still happens (its hooks fire), but only full steps compute in it.
    assert len(calls) == 6
    assert backend.info.optimizations["step_cache"] == 3


def test_each_run_starts_from_a_full_step(model_dirs):
    backend = _load(model_dirs, SpeedOptions(step_cache=4))
    one = _pixels(backend, n=1)
    assert backend.decoder_pipe.unet.step_cache._kept == {}  # let go of after the last step
    _pixels(backend, n=2)  # a different batch in between must leave nothing behind for the next run
    assert np.array_equal(one, _pixels(backend, n=1))


def test_int8_stores_the_large_layers_in_a_byte_each(model_dirs):
    backend = _load(model_dirs, SpeedOptions(quantize="int8"))
    report = backend.info.optimizations["quantize"]
    assert report["mode"] == "int8" and report["layers"] > 0
    assert report["weight_bytes_after"] < 0.7 * report["weight_bytes_before"]  # float32 -> int8 on most weights
    unet = backend.decoder_pipe.unet
    convs = [module for module in unet.modules() if isinstance(module, QuantizedConv2d)]
    assert convs and all(conv.codes.dtype == torch.int8 for conv in convs)
    assert type(unet.conv_in) is torch.nn.Conv2d  # 4 input channels x 9: too small to be worth it
    assert type(backend.decoder_pipe.movq.decoder.conv_out) is torch.nn.Conv2d  # the MoVQ is left whole
    assert type(backend.prior_pipe.prior.proj_in.weight) is torch.nn.Parameter  # 32x24: the tiny prior's are small


def test_int8_reaches_the_prior_and_its_encoders_where_their_layers_are_large(model_dirs, monkeypatch):
    monkeypatch.setattr(quantize, "MIN_WEIGHT_ELEMENTS", 512)  # the tiny prior's layers are 576 to 2,304 weights
    backend = _load(model_dirs, SpeedOptions(quantize="int8"))
    for model in (backend.prior_pipe.prior, backend.prior_pipe.text_encoder, backend.prior_pipe.image_encoder):
        linears = [layer for layer in model.modules() if isinstance(layer, torch.nn.Linear)]
        assert linears and all("Int8" in type(layer.weight).__name__ for layer in linears)
    first = _pixels(backend)
    assert first.shape == (2, 64, 64, 3) and np.array_equal(first, _pixels(backend))


def test_int8_on_karlo_and_variations(model_dirs):
    karlo = _load(model_dirs, SpeedOptions(quantize="int8"), "karlo")
    images = _pixels(karlo)
    assert images.shape == (2, 64, 64, 3) and np.array_equal(images, _pixels(karlo))
    kandinsky = _load(model_dirs, SpeedOptions(quantize="int8", step_cache=2))
    from PIL import Image

    job = ImageJob(
        task="variation", n=1, width=64, height=64, seeds=[5], preset=PRESET, image=Image.new("RGB", (64, 64), "red")
    )
    first, again = kandinsky.run(job), kandinsky.run(job)
    assert first[0].size == (64, 64) and first[0].tobytes() == again[0].tobytes()


def test_refusals_are_one_line_and_name_the_setting(model_dirs):
    with pytest.raises(ValueError, match=r"^fp8 quantization needs an NVIDIA GPU with float8 support .*not cpu$"):
        check_supported("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="fp8 quantization needs"):
        _load(model_dirs, SpeedOptions(quantize="fp8"))
    with pytest.raises(ValueError, match="step caching works on the kandinsky22 family's decoder, not karlo"):
        _load(model_dirs, SpeedOptions(step_cache=2), "karlo")
    with pytest.raises(ValueError, match="step caching cannot be combined with compile"):
        _load(model_dirs, SpeedOptions(enabled=frozenset({"sdpa", "compile"}), step_cache=2))


def test_parsers():
    assert parse_quantize(" INT8 ") == "int8" and parse_quantize("none") == "none" and parse_quantize("fp8") == "fp8"
    with pytest.raises(ValueError, match="unknown quantization 'int4': use one of none, int8, fp8"):
        parse_quantize("int4")
    assert parse_step_cache("0") == 0 and parse_step_cache(" 3 ") == 3 and parse_step_cache(2) == 2
    for bad in ("-1", "two", 1.5, True, -2):
        with pytest.raises(ValueError, match="expected 0 \\(off\\) or a whole number of steps"):
            parse_step_cache(bad)


@pytest.mark.parametrize("family", ["kandinsky22", "karlo"])
def test_the_memory_check_counts_the_quantized_size(model_dirs, family):
    """What stays loaded, estimated from the weight files' headers, is what the quantized models hold."""
    footprint = model_footprint(model_dirs[family])
    for mode in ("none", "int8"):
        backend = _load(model_dirs, SpeedOptions(quantize=mode), family)
        held = sum(weight_bytes(model) for model in pipeline_models(backend_pipelines(backend)))
        assert resident_bytes(footprint, "float32", family, mode) == pytest.approx(held, rel=0.02)
    assert resident_bytes(footprint, "float32", family, "int8") < 0.8 * resident_bytes(footprint, "float32", family)


def _with_cache(interval: int | None) -> StagePreset:
    return replace(PRESET, decoder_step_cache=interval)


def _job_pixels(backend, preset: StagePreset) -> np.ndarray:
    job = ImageJob(task="generate", n=2, width=64, height=64, seeds=[11, 12], preset=preset, prompt="a red circle")
    return np.stack([np.asarray(image, dtype=np.int16) for image in backend.run(job)])


def test_a_job_names_its_own_interval_and_leaves_the_models_alone(model_dirs, plain):
    backend = _load(model_dirs, SpeedOptions())
    assert backend.info.supports_step_cache and not _load(model_dirs, SpeedOptions(), "karlo").info.supports_step_cache
    assert np.array_equal(_job_pixels(backend, _with_cache(1)), plain)  # 1: every step, the uncached bytes
    cached = _job_pixels(backend, _with_cache(3))
    assert np.array_equal(cached, _pixels(_load(model_dirs, SpeedOptions(step_cache=3))))  # as --step-cache 3
    assert backend.decoder_pipe.unet.step_cache.cached_steps >= 2  # installed by the job, on first use
    assert np.array_equal(_pixels(backend), plain)  # jobs naming none still get the model's own: off
    assert "step_cache" not in backend.info.optimizations


def test_a_job_turns_the_models_cache_off_or_to_another_interval(model_dirs, plain):
    backend = _load(model_dirs, SpeedOptions(step_cache=3))
    assert np.array_equal(_job_pixels(backend, _with_cache(1)), plain)
    two = _job_pixels(backend, _with_cache(2))
    assert np.array_equal(two, _pixels(_load(model_dirs, SpeedOptions(step_cache=2))))
    assert np.array_equal(_pixels(backend), _pixels(_load(model_dirs, SpeedOptions(step_cache=3))))
    assert backend.decoder_pipe.unet.step_cache.interval == 3  # back to the model's own after each call


def test_a_cancelled_run_lets_go_of_the_kept_features(model_dirs):
    backend = _load(model_dirs, SpeedOptions(step_cache=3))
    cache = backend.decoder_pipe.unet.step_cache
    held = []

    def on_progress(stage: str, done: int, _total: int) -> None:
        if stage == "decoder":
            held.append(cache.holding)

    control = JobControl(should_cancel=lambda: len(held) >= 2, on_progress=on_progress)
    job = ImageJob(task="generate", n=1, width=64, height=64, seeds=[3], preset=PRESET, prompt="a red circle")
    with pytest.raises(Cancelled):
        backend.run(job, control)
    assert held[0] > 0  # it held features mid-run
    assert cache.holding == 0  # and let go of them when the job left, not at the model's next run
    backend.run(job)
    assert cache.holding == 0  # and after a finished run


def test_jobs_with_different_intervals_never_share_a_call(model_dirs):
    backend = _load(model_dirs, SpeedOptions())
    jobs = [
        ImageJob(task="generate", n=1, width=64, height=64, seeds=[1], preset=_with_cache(interval), prompt="x")
        for interval in (None, 1, 3)
    ]
    assert len({backend.batch_key(job) for job in jobs}) == 3


QUANTIZE_AND_REPORT = """
import json, re, sys
from pathlib import Path
import torch
from diffusers import PriorTransformer
from pipelines.quantize import quantize_models

def anonymous():
    return int(re.search(r"RssAnon:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

torch.manual_seed(0)
prior = PriorTransformer(num_attention_heads=8, attention_head_dim=64, num_layers=16, embedding_dim=512)
before = anonymous()
report = quantize_models([prior], "int8")
shrunk = report.weight_bytes_before - report.weight_bytes_after
print(json.dumps({"before": before, "after": anonymous(), "shrunk": shrunk}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_quantizing_hands_the_full_precision_weights_back_to_the_os():
    # In a fresh process: the test runner's own heap would blur the figure.
    done = subprocess.run([sys.executable, "-c", QUANTIZE_AND_REPORT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["shrunk"] > 100 * 2**20
    assert figures["before"] - figures["after"] > figures["shrunk"] / 2
