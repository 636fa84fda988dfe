"""A hook on a scheduler's steps, for what pipelines expose no callback for (previews, Karlo's progress)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_NOTHING = object()


@contextmanager
def after_each_step(scheduler: Any, observer: Callable[[int, Any], None]) -> Iterator[None]:
    """Call ``observer(step_index, step_output)`` after every ``scheduler.step`` inside the block.

    Pipelines expose the latents after each step but not the scheduler's
    estimate of the clean sample, which makes far better previews, and UnCLIP
    has no step callback at all. Wrapping the scheduler instance's ``step`` for
    one call gives both without copying any pipeline loop.
    """
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
