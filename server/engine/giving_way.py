"""Batch lines give way to interactive jobs at denoising-step boundaries: which running call gives its slot up.

A background call (every job in it a batch line) checks in at each denoising step. While an interactive job waits
or runs on the same device, the call pauses there and its cores go back to the budget, so the interactive call runs
on all of them, as on an idle server. When an interactive job waits, none runs, and every slot that could take it
holds a background call, the newest of those calls gives its slot up: it stops at its next step, and its jobs queue
again at the head of the batch lines, to run later from the same seeds (the same bytes). The newest, so the oldest
call keeps its progress however often interactive jobs come. A step that has started is never interrupted, so an
interactive job waits at most about one step of a background call before it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar


class SlotCall(Protocol):
    """A pipeline call on a worker slot."""

    slot: int
    started: float  # monotonic
    background: bool  # every job in it is a batch line
    yielding: bool  # giving its slot up


Call = TypeVar("Call", bound=SlotCall)


def call_to_give_way(calls: Mapping[int, Call], *, reach: int) -> Call | None:
    """The background call that should give its slot up for a waiting interactive job, if any.

    ``calls``: the running calls by slot; ``reach``: the slots below it have a copy of a waiting job's model.
    None when a call is giving way already, or a slot within reach is free (it takes the job once the
    background calls pause).
    """
    if any(call.yielding for call in calls.values()) or any(slot not in calls for slot in range(reach)):
        return None
    candidates = [call for call in calls.values() if call.background and call.slot < reach]
    return max(candidates, key=lambda call: call.started, default=None)
