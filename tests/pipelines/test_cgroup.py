"""pipelines.cgroup: a container's memory limit, read from a fake cgroup hierarchy, in the budget and the fit check.

Each test writes a ``/proc/self/cgroup`` and a ``/sys/fs/cgroup`` of its own
under ``tmp_path`` and points the module at them: v2 inside a container
(``0::/``), v2 with the limit on a parent cgroup, v1 inside a container (the
path the process sees is not below the mount), v1 and v2 side by side, and
no limit at all (``max``, v1's near-2**63).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines import cgroup
from pipelines.cgroup import CgroupMemory, cgroup_memory
from pipelines.memory import ModelTooLarge, check_fits, free_memory
from pipelines.residency import host_memory, total_memory

GIB = 1024**3
V1_NO_LIMIT = "9223372036854771712"


def fake_hierarchy(root: Path, monkeypatch: pytest.MonkeyPatch, membership: str, files: dict[str, str]) -> None:
    """``membership`` is /proc/self/cgroup's text; ``files`` maps paths under the cgroup root to their text."""
    proc = root / "proc-self-cgroup"
    proc.write_text(membership)
    for relative, text in files.items():
        path = root / "sys-fs-cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    monkeypatch.setattr(cgroup, "PROC_SELF_CGROUP", proc)
    monkeypatch.setattr(cgroup, "CGROUP_ROOT", root / "sys-fs-cgroup")


def machine_ram() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def test_v2_inside_a_container_8g(tmp_path, monkeypatch):
    fake_hierarchy(tmp_path, monkeypatch, "0::/\n", {"memory.max": str(8 * GIB), "memory.current": str(GIB)})
    assert cgroup_memory() == CgroupMemory(limit=8 * GIB, headroom=7 * GIB)
    assert host_memory() == min(machine_ram(), 8 * GIB)
    assert total_memory(torch.device("cpu")) == host_memory()


def test_v2_the_tightest_level_above_the_process_counts(tmp_path, monkeypatch):
    files = {
        "app/memory.max": str(4 * GIB),
        "app/memory.current": str(3 * GIB),
        "app/worker/memory.max": "max",
        "app/worker/memory.current": str(3 * GIB),
        "memory.max": "max",
    }
    fake_hierarchy(tmp_path, monkeypatch, "0::/app/worker\n", files)
    assert cgroup_memory() == CgroupMemory(limit=4 * GIB, headroom=GIB)


def test_v1_inside_a_container_reads_the_mounts_root(tmp_path, monkeypatch):
    # The process sees its host-side path; the container mounts only its own cgroup at memory/.
    membership = "12:pids:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/\n"
    files = {"memory/memory.limit_in_bytes": str(2 * GIB), "memory/memory.usage_in_bytes": str(GIB // 2)}
    fake_hierarchy(tmp_path, monkeypatch, membership, files)
    assert cgroup_memory() == CgroupMemory(limit=2 * GIB, headroom=GIB + GIB // 2)


def test_v1_and_v2_side_by_side_take_the_smaller(tmp_path, monkeypatch):
    files = {
        "memory/memory.limit_in_bytes": str(6 * GIB),
        "memory/memory.usage_in_bytes": "0",
        "unified/memory.max": str(5 * GIB),
        "unified/memory.current": str(GIB),
    }
    fake_hierarchy(tmp_path, monkeypatch, "4:memory:/\n0::/\n", files)
    assert cgroup_memory() == CgroupMemory(limit=5 * GIB, headroom=4 * GIB)


@pytest.mark.parametrize(
    "membership, files",
    [
        ("0::/\n", {"memory.max": "max", "memory.current": str(GIB)}),
        ("4:memory:/x\n", {"memory/x/memory.limit_in_bytes": V1_NO_LIMIT, "memory/memory.limit_in_bytes": V1_NO_LIMIT}),
        ("0::/\n", {}),  # no memory controller: nothing to read
        ("garbage\n", {"memory.max": str(GIB)}),
    ],
)
def test_no_limit_is_none_and_the_machines_ram_stands(tmp_path, monkeypatch, membership, files):
    fake_hierarchy(tmp_path, monkeypatch, membership, files)
    assert cgroup_memory() is None
    assert host_memory() == machine_ram()


def test_a_container_limit_decides_what_is_free_and_refuses_in_one_line(tmp_path, monkeypatch, tiny_model_dirs):
    fake_hierarchy(tmp_path, monkeypatch, "0::/\n", {"memory.max": str(GIB // 2), "memory.current": "0"})
    free = free_memory(torch.device("cpu"))
    assert (free.bytes, free.source) == (GIB // 2, "cgroup memory limit")
    with pytest.raises(ModelTooLarge) as caught:
        check_fits("tiny", "kandinsky22", tiny_model_dirs["kandinsky"], torch.device("cpu"), torch.float32)
    message = str(caught.value)
    assert "but only 0.5 GB is free (cgroup memory limit)" in message and "\n" not in message
