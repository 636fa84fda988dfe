"""What Easel adds on top of the optimised Kandinsky pipeline, for bench_gpu: its backend, then a whole HTTP request.

The pipeline is saved and loaded the way the server loads a model
(``pipelines.loader.load_backend``, optimisations applied at load). Timed with
the same steps and seed: the raw diffusers call on the backend's own
(optimised) models; ``backend.run``; ``backend.run`` with the decoder guided
only at t >= 600 (the guidance interval); and POST /v1/images/generations on an
in-process server holding that backend (PNG encoding and base64 included).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from diffusers import KandinskyV22CombinedPipeline

from benchmarks import gpu_measure as measure
from benchmarks.bench_server import in_process_server
from benchmarks.gpu_models import build_pipeline
from pipelines.base import ImageJob, Task
from pipelines.device import dtype_name
from pipelines.loader import load_backend
from pipelines.presets import presets_for
from pipelines.speed import SpeedOptions
from server.settings.config import Settings
from server.settings.model_specs import ModelSpec

FAMILY = "kandinsky22"
GUIDANCE_INTERVAL_MIN_TIMESTEP = 600  # easel-mini's presets' value
PROMPT = "a red fox in the snow, oil painting"  # bench_gpu's


def serving_rows(bench: Any, variant: str, enabled: frozenset[str] | None, generate: Any) -> None:
    size = bench.sizes(FAMILY)[-1]
    steps = bench.steps(FAMILY)
    with tempfile.TemporaryDirectory(prefix="easel-bench-serving-") as tmp:
        started = time.monotonic()
        model_dir = Path(tmp) / "kandinsky"
        build_pipeline(FAMILY, bench.args.tiny, bench.device, bench.dtype(FAMILY)).save_pretrained(model_dir)
        (model_dir / "easel.json").write_text(json.dumps({"native_size": size}) + "\n")
        measure.free(bench.device)
        saved = time.monotonic()
        chosen = enabled if enabled is not None else frozenset({"sdpa"})
        options = SpeedOptions(chosen, bench.args.compile_cache_dir, (1,))
        backend = load_backend(
            "kandinsky",
            FAMILY,
            model_dir,
            device=str(bench.device),
            dtype=dtype_name(bench.dtype(FAMILY)),
            optimize=options,
        )
        bench.row(
            section="serving",
            variant=variant,
            save_s=round(saved - started, 1),
            load_and_warm_up_s=round(time.monotonic() - saved, 1),
        )
        preset = replace(presets_for(FAMILY)["medium"], **{k: v for k, v in steps.items() if k != "super_res_steps"})
        interval = replace(preset, decoder_guidance_min_timestep=GUIDANCE_INTERVAL_MIN_TIMESTEP)
        raw = _raw_pipeline(backend)
        figures = {
            "raw_pipeline_s": _median(bench, lambda: generate(bench, raw, FAMILY, size, 1, steps)),
            "backend_run_s": _median(bench, lambda: backend.run(_job(size, preset))),
            "backend_run_guidance_interval_s": _median(bench, lambda: backend.run(_job(size, interval))),
        }
        figures["first_http_request_s"], figures["http_request_s"] = _http_timings(bench, backend, size, steps)
        raw_s = figures["raw_pipeline_s"]
        bench.row(
            section="serving",
            variant=variant,
            size=size,
            **{key: round(value, 4) for key, value in figures.items()},
            backend_overhead=round(figures["backend_run_s"] / raw_s - 1, 4),
            http_overhead_vs_raw=round(figures["http_request_s"] / raw_s - 1, 4),
            guidance_interval_speedup=round(figures["backend_run_s"] / figures["backend_run_guidance_interval_s"], 3),
        )


def _job(size: int, preset: Any) -> ImageJob:
    return ImageJob(task=Task.GENERATE, n=1, width=size, height=size, seeds=[0], preset=preset, prompt=PROMPT)


def _median(bench: Any, call: Any) -> float:
    call()  # warm-up
    seconds, _ = measure.timed(call, bench.device, bench.args.repeats)
    return seconds


def _raw_pipeline(backend: Any) -> KandinskyV22CombinedPipeline:
    """diffusers' combined pipeline around the backend's own models (so both run the same optimised modules)."""
    prior, decoder = backend.prior_pipe, backend.decoder_pipe
    pipe = KandinskyV22CombinedPipeline(
        unet=decoder.unet,
        scheduler=decoder.scheduler,
        movq=decoder.movq,
        prior_prior=prior.prior,
        prior_image_encoder=prior.image_encoder,
        prior_text_encoder=prior.text_encoder,
        prior_tokenizer=prior.tokenizer,
        prior_scheduler=prior.scheduler,
        prior_image_processor=prior.image_processor,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _http_timings(bench: Any, backend: Any, size: int, steps: dict[str, int]) -> tuple[float, float]:
    settings = Settings(models=(ModelSpec("kandinsky", FAMILY, Path("unused")),))
    body = {
        "model": "kandinsky",
        "prompt": PROMPT,
        "size": f"{size}x{size}",
        "response_format": "b64_json",
        "seed": 0,
        "prior_steps": steps["prior_steps"],
        "decoder_steps": steps["decoder_steps"],
    }
    timings = []
    with in_process_server(settings, loader=lambda *args, **kwargs: backend) as url:
        for _ in range(bench.args.repeats + 1):
            started = time.perf_counter()
            response = httpx.post(url + "/v1/images/generations", json=body, timeout=600)
            response.raise_for_status()
            timings.append(time.perf_counter() - started)
    # The first request on the engine's worker thread records its own CUDA graphs (pipelines/optimize.warm_up).
    return timings[0], statistics.median(timings[1:])
