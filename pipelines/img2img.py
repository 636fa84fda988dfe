"""Whole-image edits: the decoder starts from the input's own latents, noised part of the way (image to image).

As diffusers' ``KandinskyV22Img2ImgPipeline`` does it: the schedule is set for
the full step count, its first ``1 - strength`` share is skipped, and each
image's MoVQ latents are noised to the first timestep left, with noise from
that image's own generator (image i depends on ``seeds[i]`` alone). Here the
skipping is done by trimming the scheduler's timesteps for one pipeline call,
so the backend's own decoder call (batching, cancellation, previews, the
guidance interval) runs unchanged on the shorter schedule.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .base import BatchRows, Ticket

_NOTHING = object()


def steps_run(steps: int, strength: float) -> int:
    """Denoising steps a decoder of ``steps`` runs at ``strength`` (at least one, as diffusers' rounding allows)."""
    return max(1, min(int(steps * strength), steps))


@contextmanager
def starting_at(scheduler: Any, steps: int, strength: float) -> Iterator[None]:
    """Inside the block, ``scheduler.set_timesteps(steps)`` keeps only the last ``steps_run`` timesteps."""
    original = scheduler.set_timesteps
    skipped = steps - steps_run(steps, strength)

    def set_timesteps(count: int, *args: Any, **kwargs: Any) -> None:
        original(count, *args, **kwargs)
        if count == steps:
            scheduler.timesteps = scheduler.timesteps[skipped:]

    shadowed = scheduler.__dict__.get("set_timesteps", _NOTHING)
    scheduler.set_timesteps = set_timesteps
    try:
        yield
    finally:
        if shadowed is _NOTHING:
            del scheduler.set_timesteps
        else:
            scheduler.set_timesteps = shadowed


@dataclass
class ImageStart:
    """Where a batch of whole-image edits starts: each row's noised input latents, and the steps left to run."""

    latents: torch.Tensor
    steps: int


def encode_image(image: Image.Image, movq: Any, device: torch.device) -> torch.Tensor:
    """An RGB image's MoVQ latents, one row."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return movq.encode(torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device, movq.dtype)).latents


def image_start(
    rows: BatchRows,
    originals: dict[Ticket, Image.Image],
    generators: list[torch.Generator],
    movq: Any,
    scheduler: Any,
    device: torch.device,
) -> ImageStart:
    """The batch's starting latents: every job's input (at its native size) noised to the first timestep run.

    The jobs of a batch share steps and strength (the backend's batch key).
    """
    first = rows.jobs[0]
    steps = first.preset.decoder_steps
    with starting_at(scheduler, steps, first.strength):
        scheduler.set_timesteps(steps, device=device)
        start = scheduler.timesteps[:1]
    parts = []
    for ticket, span in rows.spans():
        n = ticket.job.n
        latents = encode_image(originals[ticket], movq, device)
        latents = latents.expand(n, *latents.shape[1:])
        noise = randn_tensor(tuple(latents.shape), generator=generators[span], device=device, dtype=latents.dtype)
        parts.append(scheduler.add_noise(latents, noise, start.repeat(n)))
    # The pipeline multiplies given latents by the scheduler's initial sigma (1 for Kandinsky's).
    return ImageStart(torch.cat(parts) / scheduler.init_noise_sigma, steps_run(steps, first.strength))
