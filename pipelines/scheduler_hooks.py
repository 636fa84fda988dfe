"""Hooks on a scheduler instance for the length of one pipeline call, without copying any pipeline loop.

Pipelines expose the latents after each step but not the scheduler's estimate
of the clean sample, which makes far better previews; UnCLIP has no step
callback at all; and an image-to-image start needs the schedule cut short.
Shadowing one method on the instance gives each of these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_NOTHING = object()


@contextmanager
def shadowing(target: Any, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """Inside the block, ``target.name`` is ``replacement`` (an instance attribute shadowing the class's method).

    Hooks may nest, so what was on the instance before (an outer hook's
    wrapper, or nothing) is put back afterwards.
    """
    shadowed = target.__dict__.get(name, _NOTHING)
    setattr(target, name, replacement)
    try:
        yield
    finally:
        if shadowed is _NOTHING:
            delattr(target, name)
        else:
            setattr(target, name, shadowed)


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

    with shadowing(scheduler, "step", step):
        yield
