"""Seconds per image of the shipped easel-mini model at each quality, and peak memory.

    python benchmarks/bench_mini.py [--model weights/easel-mini] [--threads 2] [--images 8]

Loads the model the way the server does (``pipelines.loader.load_backend``),
warms up once, then times ``--images`` single-image jobs per quality with
distinct seeds, and one job of 4 images at the default quality. Peak RSS is
the process's high-water mark (load + all runs).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

# Measured as the server runs: OpenMP's default wait policy. OMP_WAIT_POLICY=PASSIVE (what
# training sets, to survive a shared machine) made one image 2.7x slower here (1.90 s vs 0.70 s).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from pipelines.base import ImageJob, Task
from pipelines.loader import load_backend
from pipelines.presets import presets_for

PROMPTS = (
    "a red circle in the center",
    "a small blue star in the top left corner and a yellow heart in the bottom right corner",
    "a green ring on the right on a black background",
    "a purple diamond at the top",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("weights/easel-mini"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=8, help="timed single-image jobs per quality")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    began = time.perf_counter()
    backend = load_backend("easel-mini", "kandinsky22", args.model, presets="easel-mini", device="cpu")
    print(
        f"load: {time.perf_counter() - began:.2f} s, {args.threads} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, "
        f"{sum(backend.info.parameter_counts.values()) / 1e6:.2f} M parameters"
    )
    presets = presets_for("easel-mini")
    width, height = backend.info.native_size_for(1024, 1024)
    backend.run(_job(presets["medium"], 1, [0], width, height, PROMPTS[0]))  # warm-up

    for quality in ("low", "medium", "high"):
        preset = presets[quality]
        times = []
        for i in range(args.images):
            job = _job(preset, 1, [100 + i], width, height, PROMPTS[i % len(PROMPTS)])
            start = time.perf_counter()
            backend.run(job)
            times.append(time.perf_counter() - start)
        times.sort()
        print(
            f"{quality:>6}: {sum(times) / len(times):.3f} s/image (median {times[len(times) // 2]:.3f}, "
            f"min {times[0]:.3f}) prior {preset.prior_steps} steps x{preset.prior_guidance}, "
            f"decoder {preset.decoder_steps} steps x{preset.decoder_guidance}{_interval(preset)}"
        )

    start = time.perf_counter()
    backend.run(_job(presets["medium"], 4, [7, 8, 9, 10], width, height, PROMPTS[1]))
    print(f"medium, n=4 in one job: {(time.perf_counter() - start) / 4:.3f} s/image")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"peak RSS: {peak_mb:.0f} MB")


def _job(preset, n: int, seeds: list[int], width: int, height: int, prompt: str) -> ImageJob:
    return ImageJob(task=Task.GENERATE, n=n, width=width, height=height, seeds=seeds, preset=preset, prompt=prompt)


def _interval(preset) -> str:
    below = preset.decoder_guidance_min_timestep
    return "" if below is None else f" at t>={below}, unguided below"


if __name__ == "__main__":
    main()
