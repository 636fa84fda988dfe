"""Image edits through OpenAI's own Node SDK (tests/node): one opaque image, two images, and too many.

The SDK is installed with ``npm ci`` from the committed lock file into a cache
directory (reused while the lock file is unchanged); the test is skipped only
when Node.js itself is absent.
"""

from __future__ import annotations

import fcntl
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


def node_project(run_dir: Path) -> Path:
    """``run_dir`` with the Node tests, their dependencies linked in from a cache installed once per lock file.

    The cache is shared by every test run on the machine (xdist workers, other checkouts): one at a time
    installs, and each run's own scripts stay in its own folder.
    """
    lock = (NODE_TESTS / "package-lock.json").read_bytes()
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    installed = cache_root / "easel-tests" / f"node-{hashlib.sha256(lock).hexdigest()[:16]}"
    installed.mkdir(parents=True, exist_ok=True)
    with (installed.parent / f"{installed.name}.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not (installed / "node_modules" / "openai").is_dir():
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(NODE_TESTS / name, installed / name)
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=installed, check=True, capture_output=True, timeout=600
            )
    run_dir.mkdir()
    for name in SOURCES:
        shutil.copyfile(NODE_TESTS / name, run_dir / name)
    (run_dir / "node_modules").symlink_to(installed / "node_modules", target_is_directory=True)
    return run_dir


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js is not installed")
def test_node_sdk_edits(api_server: LiveServer, tmp_path: Path) -> None:
    project = node_project(tmp_path / "node")
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
