"""Observing a scheduler's steps from outside a pipeline, and choosing preview steps.

Pipelines expose the latents after each step but not the scheduler's
prediction of the clean sample (``pred_original_sample``), which makes far
better previews than the noisy latents; and UnCLIP has no step callback at
all. Wrapping the scheduler instance's ``step`` for the duration of one call
gives both without copying any pipeline loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


_NOTHING = object()


def preview_steps(total_steps: int, count: int) -> list[int]:
    """``count`` step indices, evenly spaced, all strictly before the last step.

    At most ``total_steps - 1`` previews exist (one per step but the last);
    asking for more gives that many, as OpenAI's partial images may be fewer
    than requested when the image is finished sooner.
    """
    count = min(count, total_steps - 1)
    return [((j + 1) * total_steps) // (count + 1) - 1 for j in range(max(count, 0))]


@contextmanager
def after_each_step(scheduler: Any, observer: Callable[[int, Any], None]) -> Iterator[None]:
    """Call ``observer(step_index, step_output)`` after every ``scheduler.step`` inside the block."""
    original_step = scheduler.step
    calls = 0

    def step(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        output = original_step(*args, **kwargs)
        observer(calls, output)
        calls += 1
        return output

    # An instance attribute shadows the class's method; hooks may nest, so put back
    # whatever was there before (an outer hook's wrapper, or nothing).
    shadowed = scheduler.__dict__.get("step", _NOTHING)
    scheduler.step = step
    try:
        yield
    finally:
        if shadowed is _NOTHING:
            del scheduler.step
        else:
            scheduler.step = shadowed


def predicted_clean(step_output: Any) -> Any:
    """The scheduler's estimate of the final sample, or the new sample if it gives none."""
    predicted = getattr(step_output, "pred_original_sample", None)
    return predicted if predicted is not None else step_output.prev_sample
