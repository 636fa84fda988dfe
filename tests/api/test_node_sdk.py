"""Image edits through OpenAI's own Node SDK (tests/node): one opaque image, two images, and too many.

The SDK is installed with ``npm ci`` from the committed lock file into a cache
directory (reused while the lock file is unchanged); the test is skipped only
when Node.js itself is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.api.test_edits import HEIGHT, PICTURE_PNG, WIDTH, encode
from tests.conftest import LiveServer

NODE_TESTS = Path(__file__).resolve().parents[1] / "node"
SOURCES = ("package.json", "package-lock.json", "edit.mjs")


def node_project() -> Path:
    """A directory with the Node tests and their installed dependencies."""
    lock = (NODE_TESTS / "package-lock.json").read_bytes()
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    project = cache_root / "easel-tests" / f"node-{hashlib.sha256(lock).hexdigest()[:16]}"
    project.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        shutil.copyfile(NODE_TESTS / name, project / name)
    if not (project / "node_modules" / "openai").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=project, check=True, capture_output=True, timeout=600
        )
    return project


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js is not installed")
def test_node_sdk_edits(api_server: LiveServer, tmp_path: Path) -> None:
    project = node_project()
    photo, other = tmp_path / "photo.png", tmp_path / "other.png"
    photo.write_bytes(PICTURE_PNG)
    other.write_bytes(encode(Image.new("RGB", (40, 30), (250, 230, 40))))
    run = subprocess.run(
        ["node", "edit.mjs", api_server.api_url, str(photo), str(other)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout.strip().splitlines()[-1])
    assert answer["one"] == [[WIDTH, HEIGHT]]
    assert answer["two"] == [[WIDTH, HEIGHT]] * 2
    assert answer["refused"]["status"] == 400
    assert answer["refused"]["param"] == "image"
    assert "An edit takes at most 16 images, but 17 were sent." in answer["refused"]["message"]
