"""The memory limit a container puts on this process: its cgroup's (v2 ``memory.max``, v1 ``memory.limit_in_bytes``).

A container started with ``--memory 8g`` still sees the whole machine in
``/proc/meminfo``, so the budget and the fit checks read the cgroup too and
take the smaller. A limit may sit on any cgroup above the process's own (a
container's init often runs in a child of the limited one), so every level
from the process's cgroup up to the hierarchy's root counts: the tightest
limit, and the least room left under any of them. ``max`` (v2) or a number
near 2**63 (v1) means no limit. The paths are module constants so that tests
can point them at a fake hierarchy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 60  # v1 writes "no limit" as LONG_MAX rounded down to a page


@dataclass(frozen=True)
class CgroupMemory:
    limit: int  # the tightest limit on the process's cgroup or any above it
    headroom: int  # the least that any of those limits leaves, less its cgroup's usage


def cgroup_memory() -> CgroupMemory | None:
    """The process's cgroup memory limit and what is left under it; None where no level has a limit."""
    levels = [level for level in (_read_level(limit, usage) for limit, usage in _levels()) if level is not None]
    if not levels:
        return None
    return CgroupMemory(min(limit for limit, _ in levels), min(max(0, limit - used) for limit, used in levels))


def _levels() -> Iterator[tuple[Path, Path]]:
    """(limit file, usage file) of each cgroup from the process's own up to the root, v2 and v1 alike."""
    try:
        entries = PROC_SELF_CGROUP.read_text().splitlines()
    except OSError:  # not Linux
        return
    for entry in entries:
        parts = entry.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one unified hierarchy, mounted at the root (or under unified/ beside v1)
            for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
                for folder in _up_from(base, path):
                    yield folder / "memory.max", folder / "memory.current"
        elif "memory" in controllers.split(","):
            # Inside a container the v1 hierarchy is mounted at the container's own cgroup: the path the
            # process sees may not exist below the mount, and the mount's root is then the limited level.
            for folder in _up_from(CGROUP_ROOT / "memory", path):
                yield folder / "memory.limit_in_bytes", folder / "memory.usage_in_bytes"


def _up_from(base: Path, path: str) -> Iterator[Path]:
    parts = [part for part in path.split("/") if part and part not in (".", "..")]
    for depth in range(len(parts), -1, -1):
        yield base.joinpath(*parts[:depth])


def _read_level(limit_file: Path, usage_file: Path) -> tuple[int, int] | None:
    try:
        limit_text = limit_file.read_text().strip()
    except OSError:  # no such level, or no memory controller there
        return None
    if not limit_text.isdigit() or int(limit_text) >= UNLIMITED:  # "max", or v1's "no limit"
        return None
    try:
        usage_text = usage_file.read_text().strip()
    except OSError:
        usage_text = "0"
    return int(limit_text), int(usage_text) if usage_text.isdigit() else 0
