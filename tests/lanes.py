"""The fast lane: which tests start a server or a process, or build a model, found by reading their code.

A test gets the ``server`` marker when its function, or any fixture it uses,
calls (directly or through helpers in ``tests/``) one of :data:`STARTERS`,
and the ``model`` marker when it reaches one of :data:`MODEL_MAKERS` (builds,
loads or trains a model: seconds each on a busy CPU). ``pytest -m "not server
and not model"`` (``scripts/test.sh --fast``) runs the rest. A guard checks the
``server`` classification while the tests run: an unmarked test that starts a
server or a process fails and says so, so the lane cannot silently grow slow.
"""

from __future__ import annotations

import dis
import functools
import inspect
import subprocess
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

import pytest
import uvicorn

# Global names whose use starts something outside the test's own thread: a uvicorn server, a child process,
# a browser, a Ray instance, the fake hub's HTTP server.
STARTERS = frozenset(
    {"running_server", "serving", "deployed", "easel", "subprocess", "sync_playwright", "ray", "uvicorn", "FakeHub"}
)
# Global names whose use builds, loads or trains a model.
MODEL_MAKERS = frozenset(
    {"load_backend", "build_tiny_kandinsky", "build_tiny_karlo", "train_main", "from_pretrained"}
    | {"EASEL_MINI", "SHIPPED"}  # the shipped model's folder
    # The real-shape pipelines of benchmarks/gpu_models.py: billions of parameters, on the meta device, still
    # seconds of module construction (and of tracing, for the FLOP count) each.
    | {"real_kandinsky_models", "real_karlo_models", "build_real_kandinsky", "build_real_karlo"}
)
MARKER = "server"
MODEL_MARKER = "model"
FAST_LANE = f"not {MARKER} and not {MODEL_MARKER}"


@functools.cache  # each test's walk meets the same helpers and fixtures again
def _global_names(code: types.CodeType) -> frozenset[str]:
    """The module-level names ``code`` reads, including those of the functions and lambdas inside it.

    Names a function imports for itself count too (``from pipelines.loader import load_backend`` inside a
    fixture reads no global, yet loads a model), and so does a module it imports (``import ray``).
    """
    names: set[str] = set()
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME", "IMPORT_FROM"):
            names.add(ins.argval)
        elif ins.opname == "IMPORT_NAME":
            names.add(ins.argval.partition(".")[0])
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return frozenset(names)


def _own_callables(value: Any) -> Iterator[Callable]:
    """``value`` itself if it is a function of the test suite, or a test-suite class's functions."""
    if not getattr(value, "__module__", "").startswith("tests"):
        return
    if isinstance(value, type):
        yield from (v for v in vars(value).values() if inspect.isfunction(v))
    elif callable(value):
        yield value


def reaches(func: Callable, names_sought: frozenset[str], seen: set[types.CodeType]) -> bool:
    """Whether ``func``, or a test-suite helper it calls, reads one of ``names_sought``."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    names = _global_names(code)
    if names & names_sought:
        return True
    scope = getattr(func, "__globals__", {})
    return any(reaches(helper, names_sought, seen) for name in names for helper in _own_callables(scope.get(name)))


def _fixture_definitions(item: pytest.Item) -> Iterable[Sequence[Any]]:
    info = getattr(item, "_fixtureinfo", None)
    return info.name2fixturedefs.values() if info else ()


def _fixture_functions(item: pytest.Item) -> Iterable[Callable]:
    for definitions in _fixture_definitions(item):
        yield from (definition.func for definition in definitions)


def mark_lanes(items: list[pytest.Item]) -> None:
    for marker, names in ((MARKER, STARTERS), (MODEL_MARKER, MODEL_MAKERS)):
        cache: dict[types.CodeType, bool] = {}
        for item in items:
            if item.get_closest_marker(marker):
                continue
            functions = [getattr(item, "function", None), *_fixture_functions(item)]
            if any(_reaches(func, names, cache) for func in functions if func is not None):
                item.add_marker(marker)


# Session-scoped fixtures too costly to build once per worker (a Ray instance, a trained model), with the xdist
# group their tests share. The root conftest's tiny models and server are cheap: every worker builds its own.
SHARED_SESSION_FIXTURES = {"serve_port": "ray", "tiny_model": "trained-tiny-model"}


def group_shared_fixtures(items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``, keep the tests that share an expensive fixture on one xdist worker.

    Tests of a module whose module-scoped fixture starts a server or builds a model run together, so the
    fixture is built once, not once per worker; the tests of each of :data:`SHARED_SESSION_FIXTURES` (the
    Ray instance, the lab's trained tiny model) run together too, so it is built once per session.
    """
    cache: dict[types.CodeType, bool] = {}
    for item in items:
        definitions = [d for defs in _fixture_definitions(item) for d in defs]
        shared = [SHARED_SESSION_FIXTURES[d.argname] for d in definitions if d.argname in SHARED_SESSION_FIXTURES]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
        elif any(d.scope == "module" and _reaches(d.func, STARTERS | MODEL_MAKERS, cache) for d in definitions):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def _reaches(func: Callable, names: frozenset[str], cache: dict[types.CodeType, bool]) -> bool:
    code = getattr(inspect.unwrap(func), "__code__", None)
    if code is None:
        return False
    if code not in cache:
        cache[code] = reaches(func, names, set())
    return cache[code]


def guard_unmarked(item: pytest.Item, monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test without the marker: starting a server or a process fails the test with the fix to make."""

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(
            f"{item.nodeid} starts a server or a process but is not marked: the fast lane (-m '{FAST_LANE}') "
            f"would run it. Add @pytest.mark.{MARKER}, or add the helper it uses to tests/lanes.py's STARTERS."
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(uvicorn.Server, "run", refuse)
