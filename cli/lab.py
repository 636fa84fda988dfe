"""``easel train``, ``easel eval``, ``easel bench``: the lab's and the benchmarks' own commands under one roof.

Arguments pass through untouched (``easel train --help`` is the training
script's help). The lab is reached only here, by module name when the
command runs: the server never imports it.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Callable
from pathlib import Path

LAB_MODULES = {"train": "pipelines.lab.training.train", "eval": "pipelines.lab.evaluate"}
BENCHMARKS_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
BENCHMARKS = {"mini": "bench_mini.py", "server": "bench_server.py", "gpu": "bench_gpu.py"}
BENCH_USAGE = (
    "usage: easel bench {mini,server,gpu} [options]\n"
    "  mini    seconds per image of a model, in this process (benchmarks/bench_mini.py)\n"
    "  server  latency and throughput of a running or in-process server (benchmarks/bench_server.py)\n"
    "  gpu     Kandinsky 2.2 and Karlo at real shapes, each speed setting against stock (benchmarks/bench_gpu.py)\n"
    "`easel bench mini --help` shows a benchmark's options."
)


def run(name: str, argv: list[str]) -> int:
    if name == "bench":
        return _bench(argv)
    module = LAB_MODULES[name]
    return _as_main(f"easel {name}", argv, lambda: runpy.run_module(module, run_name="__main__", alter_sys=True))


def _bench(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(BENCH_USAGE)
        return 0 if argv else 2
    if argv[0] not in BENCHMARKS:
        print(f"easel: error: unknown benchmark {argv[0]!r}\n{BENCH_USAGE}", file=sys.stderr)
        return 2
    script = BENCHMARKS_DIR / BENCHMARKS[argv[0]]
    if not script.is_file():
        print(f"easel: error: {script} not found: the benchmarks live in a checkout of Easel", file=sys.stderr)
        return 2
    return _as_main(f"easel bench {argv[0]}", argv[1:], lambda: runpy.run_path(str(script), run_name="__main__"))


def _as_main(prog: str, argv: list[str], start: Callable[[], object]) -> int:
    """Run a script's ``__main__`` with ``argv`` as its arguments; its exit status is returned."""
    saved = sys.argv
    sys.argv = [prog, *argv]
    try:
        start()
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
    return 0
