"""The longest work first: the suite's known-slow test files go to the xdist workers before everything else.

Under ``--dist loadgroup`` each xdist group (or ungrouped test) is a unit of work, handed out in the order the
collection first names it (with ``--no-loadscope-reorder``, which ``scripts/test.sh`` passes: xdist would
otherwise put the groups with the most tests first, whatever they cost). A test file of minutes started last
keeps one worker busy after the others are done, so :func:`longest_first` moves the units of the files in
:data:`SECONDS` to the front, the costliest first; every other test keeps its place. A group spanning several
files (the Ray tests share one Ray instance) costs the sum of its files. Each file's tests stay together and in
their order, so a module-scoped fixture is still built once per worker that runs the file.
"""

from __future__ import annotations

import pytest

# Seconds a file's tests took on the 2-core machine under load, rounded (``tests/cpu_profile.py`` measures them):
# only their order matters. Files not named here are quick.
SECONDS = {
    "tests/api/test_load.py": 300,
    "tests/cli/test_pull_layouts.py": 300,
    "tests/api/test_shutdown.py": 240,
    "tests/benchmarks/test_bench_gpu.py": 150,
    "tests/cli/test_pull.py": 140,
    "tests/pipelines/test_optimize.py": 130,
    "tests/cli/test_serve.py": 100,
    "tests/api/test_batch_restart.py": 100,
    "tests/server/test_model_memory.py": 90,
    "tests/pipelines/test_savings.py": 80,
    "tests/api/test_generations.py": 75,
    "tests/api/test_operations.py": 75,
    "tests/server/test_batching_engine.py": 70,
    "tests/api/test_webhook_restart.py": 65,
    "tests/lab/test_training.py": 65,
    "tests/api/test_openapi_fuzz.py": 60,
    "tests/api/test_hosts_and_descriptors.py": 60,
    # The Ray group, one unit of about 660 s in all: each of its replicas is a process that imports torch and
    # diffusers, slow on a machine whose cores the other workers keep busy.
    "tests/scaleout/test_autoscaling.py": 420,
    "tests/scaleout/test_replicas.py": 65,
    "tests/scaleout/test_batches_on_ray.py": 55,
    "tests/scaleout/test_scale_to_zero.py": 35,
    "tests/scaleout/test_scale_to_zero_timeout.py": 30,
    "tests/scaleout/test_command.py": 25,
    "tests/scaleout/test_ingress_envelope.py": 20,
    "tests/scaleout/test_savings_on_ray.py": 20,
}


def scope_of(item: pytest.Item) -> str:
    """The unit xdist's loadgroup scheduler hands out whole: the item's xdist group, else the item itself."""
    group = item.get_closest_marker("xdist_group")
    return str(group.args[0]) if group and group.args else item.nodeid


def longest_first(items: list[pytest.Item]) -> None:
    """Reorder ``items`` in place: the costliest units first (a unit costs the sum of its files), the rest as
    collected."""
    files: dict[str, set[str]] = {}
    for item in items:
        files.setdefault(scope_of(item), set()).add(item.nodeid.split("::")[0])
    cost = {scope: sum(SECONDS.get(file, 0) for file in named) for scope, named in files.items()}
    items.sort(key=lambda item: -cost[scope_of(item)])  # stable: a file's tests keep their order
