"""OpenMP's idle threads spin briefly, not for milliseconds, so that a busy machine's cores go to the work.

torch's CPU kernels run on GNU OpenMP (libgomp). After each parallel region its
threads spin-wait for the next one: 300,000 spins (about 3 ms) by default, but
only 100 once the process runs more OpenMP threads than it has cores. On a
machine whose cores other processes also want (a load average above the core
count), the long spin burns the time slices the working thread needs. Measured
on a 2-core machine at load average 15 to 22: easel-mini's 256x256 image took
56 to 114 s on the model loaded at start, and 2 to 5 s once an on-demand load
had added enough threads to switch libgomp to its short spin; with the short
spin from the start, 2 to 3.4 s. libgomp reads its settings once, when torch
loads it, so the server sets them before anything imports torch, unless the
operator chose a policy (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SHORT_SPIN = "100"  # libgomp's own spin count for a process with more threads than cores
OPERATORS_CHOICE = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def spin_briefly(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set libgomp's short spin in ``environ`` unless a policy is set there already; whether it was set.

    Call before torch is imported: libgomp reads its environment only when it loads.
    """
    if any(name in environ for name in OPERATORS_CHOICE):
        return False
    environ["GOMP_SPINCOUNT"] = SHORT_SPIN
    return True
