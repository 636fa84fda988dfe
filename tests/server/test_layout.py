"""The architecture as rules: who may import whom, how many files a request passes, how long a module may grow."""

from __future__ import annotations

import ast
import os
import threading
from pathlib import Path

import httpx

from ..conftest import FAST, running_server, tiny_settings

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("server", "pipelines", "weights", "cli", "tests", "benchmarks", "examples", "scripts")
MAX_MODULE_LINES = 400
MAX_REQUEST_PATH_FILES = 10
MODEL_LIBRARIES = ("torch", "diffusers", "transformers", "tokenizers")


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
    # `easel pull` talks to the hub; importing pipelines would put the hub offline (pipelines/__init__.py).
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


def test_a_generation_request_passes_at_most_ten_project_files(tiny_model_dirs):
    """Every project file whose code runs while one non-streaming generation is served (url answer)."""
    roots = tuple(str(REPO / name) + os.sep for name in ("server", "pipelines"))
    recording = threading.Event()
    seen: dict[str, None] = {}  # insertion-ordered set

    def profile(frame, event, arg):
        if event == "call" and recording.is_set() and frame.f_code.co_filename.startswith(roots):
            seen.setdefault(str(Path(frame.f_code.co_filename).relative_to(REPO)))

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
    assert len(files) <= MAX_REQUEST_PATH_FILES, files
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
