"""``easel`` and ``easel serve`` as processes: help, version, bare easel serving, and how a start fails.

A configuration mistake exits 2 with one line before anything listens; a
model that fails to load stops the server (exit 1, one line saying which and
why) unless ``--keep-going``, which keeps serving and reports it in
readiness.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli.main import COMMANDS

from ..conftest import LOOPBACK_TLS
from .conftest import REPO, clean_env, easel, free_port


@pytest.fixture
def broken_model(tmp_path: Path) -> Path:
    directory = tmp_path / "broken"
    directory.mkdir()
    (directory / "model_index.json").write_text(
        '{"_class_name": "KandinskyV22CombinedPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}'
    )
    return directory


def test_help_lists_every_command_and_version_prints_it(tmp_path: Path):
    env = clean_env(tmp_path)
    helped = easel("--help", env=env)
    assert helped.returncode == 0
    for command in COMMANDS:
        assert f"    {command} " in helped.stdout
    version = easel("--version", env=env)
    assert version.returncode == 0 and version.stdout.startswith("easel 0.")


def test_bare_easel_serves_and_a_bad_port_stops_it_before_listening(tmp_path: Path):
    for command in (["--port", "99999"], ["serve", "--port", "99999"]):
        done = easel(*command, env=clean_env(tmp_path))
        assert done.returncode == 2
        assert done.stderr == "easel: error: --port: 99999 is not a port number (must be 1-65535)\n"
    done = subprocess.run(
        [sys.executable, "-m", "server", "--port", "99999"],
        cwd=REPO,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1


def test_an_image_dir_that_cannot_be_written_stops_the_server_in_one_line(tmp_path: Path):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    done = easel("serve", "--port", str(free_port()), "--image-dir", str(not_a_dir), env=clean_env(tmp_path))
    assert done.returncode == 2
    assert done.stderr == (
        f"easel: error: --image-dir: {not_a_dir} cannot hold the images answered as URLs (not a directory); "
        "choose a writable directory\n"
    )
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(read_only)]).returncode
    ):
        return  # root only: a read-only mount is the one way to refuse root a write
    try:
        env = clean_env(tmp_path, EASEL_IMAGE_DIR=str(read_only))
        done = easel("serve", "--port", str(free_port()), env=env)
    finally:
        subprocess.run(["umount", "-l", str(read_only)], check=False)
    assert done.returncode == 2
    assert done.stderr == (
        f"easel: error: EASEL_IMAGE_DIR: {read_only} cannot hold the images answered as URLs (read-only file system); "
        "choose a writable directory\n"
    )


def test_a_model_that_fails_to_load_stops_the_server_with_its_reason(broken_model: Path, tmp_path: Path):
    done = easel(
        "serve",
        "--port",
        str(free_port()),
        "--model",
        f"bad=kandinsky22:{broken_model}",
        env=clean_env(tmp_path),
        timeout=240,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("easel: error: model 'bad' failed to load: ")
    assert last.endswith("(start with --keep-going to serve the other models)")


def test_keep_going_serves_on_and_reports_the_failure(
    broken_model: Path, tmp_path: Path, tiny_model_dirs: dict[str, Path]
):
    port = free_port()
    command = [sys.executable, "-m", "cli", "serve", "--port", str(port), "--keep-going"]
    command += [
        "--model",
        f"tiny=kandinsky22:{tiny_model_dirs['kandinsky']}",
        "--model",
        f"bad=kandinsky22:{broken_model}",
    ]
    process = subprocess.Popen(
        command, cwd=REPO, env=clean_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, "the server stopped"
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5, verify=LOOPBACK_TLS)
                models = ready.json()["models"]
                if models["bad"]["status"] == "failed" and models["tiny"]["status"] == "ready":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "no readiness report"
            time.sleep(0.3)
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) in (0, -signal.SIGINT)  # uvicorn re-raises the signal once it has stopped
