"""The architecture as rules: who may import whom, how many files a request passes, how long a module may grow."""

from __future__ import annotations

import ast
import os
import threading
from pathlib import Path

import httpx

from ..conftest import FAST, running_server, tiny_settings

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("server", "pipelines", "weights", "cli", "patches", "tests", "benchmarks", "examples", "scripts")
MAX_MODULE_LINES = 400
MAX_REQUEST_PATH_FILES = 10
MODEL_LIBRARIES = ("torch", "diffusers", "transformers", "tokenizers")
EASEL_PACKAGES = ("server", "pipelines", "weights", "cli", "patches")

# server/ from the bottom up: a module may import its own layer and those below it, never one above.
SERVER_LAYERS = (
    ("server.settings",),  # what to serve and how: options, the settings file, models, the Ray layout
    ("server.http",),  # HTTP below the API: errors and their envelope, the connection guard, middleware, CORS
    ("server.protocol",),  # requests and responses as types
    ("server.engine",),  # jobs on workers
    ("server.webhooks",),  # signed events to the configured URLs, delivered off the serving threads
    ("server.observe",),  # logs and metrics
    ("server.serving",),  # what an endpoint does
    ("server.routes",),  # URLs, and the state the routes share
    ("server.app", "server.scaleout", "server.__main__"),  # the application, run here or on Ray Serve
)

# Import circles that exist and are meant to go; none may be added, and there are none today.
KNOWN_CIRCLES: list[set[str]] = []

# Private modules of a library (a dotted part starting with "_") imported outside patches/, each with its reason.
PRIVATE_IMPORTS_ALLOWED: dict[str, str] = {}


def _modules(*dirs: str) -> list[Path]:
    return sorted(path for name in dirs for path in (REPO / name).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved), at any depth in the file."""
    package = path.relative_to(REPO).with_suffix("").parts[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _offenders(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in paths:
        bad = sorted(name for name in _imported(path) if name.split(".")[0] in forbidden or name.startswith(forbidden))
        if bad:
            found[str(path.relative_to(REPO))] = bad
    return found


def test_the_server_never_imports_the_lab_or_a_model_library():
    # The HTTP layer knows nothing of diffusers; the backends are reached only through pipelines.base's types.
    forbidden = ("pipelines.lab", *MODEL_LIBRARIES)
    assert _offenders(_modules("server"), forbidden) == {}


def test_backends_never_import_the_server_or_the_lab():
    backends = [path for path in _modules("pipelines") if "lab" not in path.relative_to(REPO).parts]
    assert backends, "no backend modules found"
    assert _offenders(backends, ("server", "pipelines.lab")) == {}


def test_the_lab_never_imports_the_server():
    assert _offenders(_modules("pipelines/lab"), ("server",)) == {}


def test_only_the_command_line_imports_the_command_line():
    # cli/ sits above the server and the backends: it uses them, never the other way round.
    assert _offenders(_modules("server", "pipelines", "weights"), ("cli",)) == {}


def test_the_online_path_never_imports_model_code_or_the_server():
    # `easel pull` talks to the hub; loading a model puts the hub offline (patches/huggingface_hub.py).
    online = [REPO / "cli" / name for name in ("pull.py", "hub.py", "hubfiles.py", "licenses.py", "recipes.py")]
    assert _offenders(online, ("pipelines", "server", *MODEL_LIBRARIES)) == {}
    assert _offenders(_modules("weights"), ("pipelines", "server")) == {}


def test_plain_serving_never_needs_ray():
    # server/scaleout/ is Ray's one home (the `ray` extra); server/__main__.py imports it only for --ray.
    plain = [path for path in _modules("server") if "scaleout" not in path.relative_to(REPO).parts]
    assert _offenders(plain, ("ray",)) == {}


def test_no_module_is_longer_than_the_limit():
    lengths = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in _modules(*CODE_DIRS)}
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}


def _request_path_stop(path: Path) -> str:
    """A file the request passes, or ``server/http/`` for any of the HTTP guards.

    The guards (request id, access log, API key, body limit, host check, the connection guard) are one layer that
    every request crosses, kept one concept per module; the cap is on how far a request travels through the
    application behind them.
    """
    relative = path.relative_to(REPO)
    return "server/http/" if relative.parts[:2] == ("server", "http") else str(relative)


def test_a_generation_request_passes_at_most_ten_project_files(tiny_model_dirs):
    """Every project file whose code runs while one non-streaming generation is served (url answer)."""
    roots = tuple(str(REPO / name) + os.sep for name in ("server", "pipelines", "patches"))
    recording = threading.Event()
    seen: dict[str, None] = {}  # insertion-ordered set

    def profile(frame, event, arg):
        if event == "call" and recording.is_set() and frame.f_code.co_filename.startswith(roots):
            seen.setdefault(_request_path_stop(Path(frame.f_code.co_filename)))

    # Set before the server starts, so the event loop, the worker and the thread pool inherit it.
    threading.setprofile(profile)
    try:
        with running_server(tiny_settings(tiny_model_dirs)) as live:
            body = {"prompt": "a red circle", "size": "256x256", "seed": 1, **FAST}
            assert httpx.post(live.url + "/v1/images/generations", json=body, timeout=60).status_code == 200
            recording.set()  # the second request: every lazy import and first-call setup is done
            response = httpx.post(live.url + "/v1/images/generations", json=body, timeout=60)
            recording.clear()
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    assert response.status_code == 200 and "url" in response.json()["data"][0]
    files = list(seen)
    assert len(files) <= MAX_REQUEST_PATH_FILES, "\n".join(files)
    # The flow reads top to bottom: serving's endpoint -> protocol -> engine -> backend -> files.
    order = [
        "server/serving/images.py",
        "server/protocol/",
        "server/engine/",
        "pipelines/kandinsky.py",
        "server/serving/files.py",
    ]
    firsts = [next(i for i, name in enumerate(files) if name.startswith(prefix)) for prefix in order]
    assert firsts == sorted(firsts), files


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_imports(paths: list[Path]) -> dict[str, set[str]]:
    """Module name -> the modules of ``paths`` it imports (``from pkg import name`` counts as ``pkg.name`` if it is
    a module, else as ``pkg``)."""
    modules = {_module_name(path): path for path in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for imported in _imported(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                found.add(imported)
        graph[name] = found
    return graph


def _circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    circles.append(group)
    return circles


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _circles(graph) == [{"a", "b", "c"}]


def test_no_import_circle_in_the_server_or_the_command_line():
    graph = _project_imports(_modules("server", "cli", "patches"))
    assert [circle for circle in _circles(graph) if circle not in KNOWN_CIRCLES] == []


def _layer(module: str) -> int | None:
    for level, packages in enumerate(SERVER_LAYERS):
        if any(module == package or module.startswith(package + ".") for package in packages):
            return level
    return None


def test_every_server_module_has_a_layer():
    unplaced = [name for name in _project_imports(_modules("server")) if name != "server" and _layer(name) is None]
    assert unplaced == [], "add the new package to SERVER_LAYERS"


def test_no_server_module_imports_a_higher_layer():
    upward = {
        name: sorted(other for other in imports if other != "server" and (_layer(other) or 0) > (_layer(name) or 0))
        for name, imports in _project_imports(_modules("server")).items()
        if name != "server"
    }
    assert {name: found for name, found in upward.items() if found} == {}


def test_patches_import_no_easel_code():
    # Each patch is a library's business alone; Easel calls it, never the other way round.
    assert _offenders(_modules("patches"), EASEL_PACKAGES[:-1]) == {}


def test_only_patches_import_a_library_s_private_modules():
    code = [path for path in _modules("server", "pipelines", "weights", "cli") if "lab" not in path.parts]
    private = {
        str(path.relative_to(REPO)): sorted(
            name
            for name in _imported(path)
            if name.split(".")[0] not in EASEL_PACKAGES
            and any(part.startswith("_") and not part.startswith("__") for part in name.split(".")[1:])
            and name not in PRIVATE_IMPORTS_ALLOWED
        )
        for path in code
    }
    assert {name: found for name, found in private.items() if found} == {}
