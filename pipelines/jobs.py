"""What every backend does with an :class:`pipelines.base.ImageJob` around its pipeline calls."""

from __future__ import annotations

import torch

from .base import Cancelled, ImageJob


def seeded_generators(device: torch.device, seeds: list[int]) -> list[torch.Generator]:
    """One generator per image, so image i depends on ``seeds[i]`` alone."""
    return [torch.Generator(device).manual_seed(seed) for seed in seeds]


def raise_if_cancelled(job: ImageJob) -> None:
    if job.should_cancel is not None and job.should_cancel():
        raise Cancelled()


def check_seeds(job: ImageJob) -> None:
    if len(job.seeds) != job.n or job.n < 1:
        raise ValueError(f"need one seed per image: n={job.n}, {len(job.seeds)} seeds")
