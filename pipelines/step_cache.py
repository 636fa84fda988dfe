"""Step caching for the decoder UNet, in the DeepCache style (docs/performance.md, "Step caching").

Between neighbouring denoising steps the UNet's deep features (everything
below its outermost down and up blocks) change little, while its shallow
blocks carry the detail. With an interval N, every N-th step runs the whole
UNet and keeps each deep block's output; the steps between run only the
outermost blocks, feeding the kept deep features to the outermost up block.
Those steps cost a fraction of a full pass; the images change a little, which
the trade-off benchmark prices in accuracy points.

A step is always run in full when the batch's shape differs from the kept
features' (a guidance interval halves the batch part-way, a cancelled job
drops rows) and at the start of every run (the scheduler's ``set_timesteps``
clears what was kept). Without a cache installed nothing here runs: outputs
are byte-identical to the stock UNet's.

The interval is the model's (``--step-cache``) unless a request names its own
(``decoder_step_cache``): :func:`step_caching` sets it for one decoder call,
installing the cache on first use, and lets go of the kept features when the
call ends, finished, failed or cancelled. At an interval of 1 nothing is kept.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from diffusers import UNet2DConditionModel


class StepCache:
    """The kept deep features of one UNet and when to reuse them."""

    def __init__(self, interval: int) -> None:
        """``interval``: the model's own, for runs that name none; 0 (off) when installed for a request's."""
        if interval < 0:
            raise ValueError(f"a step-cache interval is 0 (off) or a whole number of steps >= 1, got {interval}")
        self.default_interval = interval
        self.interval = interval  # this run's
        self.reusing = False
        self.full_steps = 0  # counters for tests and logs: whole passes and shortened ones since loading
        self.cached_steps = 0
        self._kept: dict[int, Any] = {}  # deep block index -> its output at the last full step
        self._shape: tuple[int, ...] | None = None  # the input shape the kept features belong to
        self._since_full = 0

    @property
    def holding(self) -> int:
        """How many deep blocks' features are kept now (0 between runs)."""
        return len(self._kept)

    def clear(self) -> None:
        self._kept.clear()
        self._shape = None
        self._since_full = 0

    def begin_step(self, sample: torch.Tensor) -> None:
        """Decide, before a UNet pass on ``sample``, whether it reuses the kept deep features."""
        shape = tuple(sample.shape)
        due = self._since_full + 1 >= self.interval
        self.reusing = bool(self._kept) and shape == self._shape and not due
        if self.reusing:
            self._since_full += 1
            self.cached_steps += 1
        else:
            self._kept.clear()
            self._shape = shape
            self._since_full = 0
            self.full_steps += 1

    def run_block(self, index: int, forward: Any, *args: Any, **kwargs: Any) -> Any:
        """A deep block's output: the kept one on a reusing step, else computed and kept."""
        if self.reusing:
            return self._kept[index]
        output = forward(*args, **kwargs)
        if self.interval > 1:  # at 1 (or off) no step reuses them: keeping them would only hold memory
            self._kept[index] = output
        return output


@contextmanager
def step_caching(unet: UNet2DConditionModel, scheduler: Any, interval: int | None) -> Iterator[StepCache]:
    """One decoder call at ``interval`` (None: the model's own), its kept features let go of however it ends.

    A cancelled job ends the call between two steps, after the last full step kept its features; without the
    ``finally`` they would stay held (hundreds of megabytes at real size) until the model's next run.
    """
    cache = getattr(unet, "step_cache", None)
    if cache is None:
        cache = install(unet, scheduler, 0)
    cache.interval = cache.default_interval if interval is None else interval
    try:
        yield cache
    finally:
        cache.clear()
        cache.interval = cache.default_interval


def install(unet: UNet2DConditionModel, scheduler: Any, interval: int) -> StepCache:
    """Cache ``unet``'s deep blocks every ``interval`` steps (0: only runs that ask, :func:`step_caching`);
    ``scheduler`` starting a run clears the cache."""
    if getattr(unet, "step_cache", None) is not None:
        raise ValueError("this UNet already has a step cache")
    if len(unet.down_blocks) < 2 or len(unet.up_blocks) != len(unet.down_blocks):
        raise ValueError("step caching needs a UNet with at least two down blocks and as many up blocks")
    cache = StepCache(interval)
    deep = [*unet.down_blocks[1:], unet.mid_block, *unet.up_blocks[:-1]]
    for index, block in enumerate(deep):
        block.forward = functools.partial(cache.run_block, index, block.forward)
    unet.register_forward_pre_hook(_begin_step(cache), with_kwargs=True)
    unet.register_forward_hook(_clear_after_last_step(cache, scheduler), with_kwargs=True)
    set_timesteps = scheduler.set_timesteps

    @functools.wraps(set_timesteps)
    def set_timesteps_and_clear(*args: Any, **kwargs: Any) -> Any:
        cache.clear()
        return set_timesteps(*args, **kwargs)

    scheduler.set_timesteps = set_timesteps_and_clear
    unet.step_cache = cache
    return cache


def _begin_step(cache: StepCache) -> Any:
    def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        cache.begin_step(kwargs["sample"] if "sample" in kwargs else args[0])

    return hook


def _clear_after_last_step(cache: StepCache, scheduler: Any) -> Any:
    """Let go of the kept features once the schedule's last step has run, rather than hold them until the next
    generation (at real size and a large batch they are hundreds of megabytes)."""

    def hook(_module: torch.nn.Module, _args: tuple, kwargs: dict, _output: Any) -> None:
        timestep, timesteps = kwargs.get("timestep"), getattr(scheduler, "timesteps", None)
        if (
            timestep is not None
            and timesteps is not None
            and len(timesteps)
            and float(timestep) == float(timesteps[-1])
        ):
            cache.clear()

    return hook
