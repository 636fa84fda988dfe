"""Batch lines give way to interactive jobs at denoising-step boundaries: which running call gives its slot up.

A background call (every job in it a batch line) checks in at each denoising step. While an interactive job waits
or runs on the same device, the call pauses there and its cores go back to the budget, so the interactive call runs
on all of them, as on an idle server. When an interactive job waits, none runs, and the first slot holds a
background call, that call gives the slot up (:func:`call_to_give_way` says why that one): it stops at its next step,
and its jobs queue again at the head of the batch lines, to run later from the same seeds (the same bytes). A step
that has started is never interrupted, so an interactive job waits at most about one step of a background call
before it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, TypeVar


class SlotCall(Protocol):
    """A pipeline call on a worker slot."""

    background: bool  # every job in it is a batch line
    yielding: bool  # giving its slot up


Call = TypeVar("Call", bound=SlotCall)


def call_to_give_way(calls: Mapping[int, Call]) -> Call | None:
    """The call that should give its slot up for a waiting interactive job (none runs), if any: slot 0's, when it
    holds batch lines and is not giving way already.

    Slot 0's, whatever the other slots do: the interactive call then runs where a lone request always runs, on
    warm threads, with every core. A second slot given two threads for it keeps a larger OpenMP team alive for
    good, and with more OpenMP threads than cores libgomp stops spinning between parallel regions, which made
    every later request on a small model about twice as slow. Slot 0's call is the one that starts again; the
    others only pause, so they keep their progress however often interactive jobs come.
    """
    first = calls.get(0)
    return first if first is not None and first.background and not first.yielding else None
