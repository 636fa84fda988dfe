"""A full or read-only image directory: ``url`` answers are 507 with Retry-After, nothing is left behind.

Each test mounts a small tmpfs as ``--image-dir`` (root only; skipped with the
reason otherwise). ``b64_json`` answers keep working, a failed write removes
its partial file and the request's other images at once, an expired URL is a
404 even where its file cannot be deleted, and each disk condition is logged
once as a warning, without a traceback. The Files API's data directory answers
uploads it cannot store the same way.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.settings.config import Settings
from weights.spec import ModelSpec

from ..conftest import FAST, TINY, assert_envelope, running_server


@contextlib.contextmanager
def tmpfs(path: Path, size_kib: int) -> Iterator[Path]:
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)], check=False)
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def fill(directory: Path, leave_bytes: int) -> Path:
    """A filler file that leaves about ``leave_bytes`` free (tmpfs counts whole 4 KiB pages)."""
    filler = directory / "filler"
    stats = os.statvfs(directory)
    free = stats.f_bavail * stats.f_frsize
    with filler.open("wb") as file:
        file.write(b"\0" * max(0, free - leave_bytes))
    return filler


def generate(url: str, **fields) -> httpx.Response:
    body = {"model": TINY, "prompt": "a red circle", "size": "64x64", "seed": 11, **FAST, **fields}
    return httpx.post(url + "/v1/images/generations", json=body, timeout=120)


def our_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in ("filler", "lost+found"))


def storage_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "easel.files" and r.levelno == logging.WARNING]


def wait_for_warning(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 60) -> None:
    """Until a storage warning containing ``text`` is logged; the timeout only ends a hung test."""
    deadline = time.monotonic() + timeout
    while not any(text in r.getMessage() for r in storage_warnings(caplog)):
        assert time.monotonic() < deadline, f"no warning saying {text!r}"
        time.sleep(0.05)


def test_a_full_disk_answers_507_removes_every_file_of_the_request_and_b64_still_works(
    tiny_model_dirs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with tmpfs(tmp_path / "images", 2048) as images:
        settings = Settings(models=(ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"]),))
        settings = Settings(**{**settings.__dict__, "image_dir": images, "default_model": TINY})
        with running_server(settings) as live:
            png = base64.b64decode(generate(live.url, response_format="b64_json").json()["data"][0]["b64_json"])
            pages = -(-len(png) // 4096)
            filler = fill(images, (pages + 1) * 4096)  # room for one image of the request's four, not two
            caplog.set_level(logging.WARNING)
            for _ in range(2):
                answer = generate(live.url, n=4)
                error = assert_envelope(answer, 507, code="insufficient_storage")
                assert error["type"] == "server_error"
                assert error["message"] == (
                    "The server cannot store images for URLs right now (no space left on device). "
                    "Ask for response_format b64_json, or retry later."
                )
                assert answer.headers["retry-after"] == "30"
                assert our_files(images) == []  # no .part file, and not the one image that fitted
            assert len(storage_warnings(caplog)) == 1  # once per condition, not per request
            assert not [r for r in caplog.records if r.exc_info]
            kept = generate(live.url, response_format="b64_json", n=2)
            assert kept.status_code == 200 and len(kept.json()["data"]) == 2
            filler.unlink()
            served = generate(live.url, n=2)
            assert served.status_code == 200
            assert len(our_files(images)) == 2


def test_a_read_only_directory_answers_507_and_expired_urls_404_with_one_warning(
    tiny_model_dirs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    with tmpfs(tmp_path / "images", 2048) as images:
        spec = ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"])
        settings = Settings(models=(spec,), default_model=TINY, image_dir=images, url_ttl_seconds=1)
        with running_server(settings) as live:
            url = generate(live.url).json()["data"][0]["url"]
            caplog.set_level(logging.WARNING)
            remount(images, "ro")
            try:
                assert_envelope(generate(live.url), 507, code="insufficient_storage")
                assert generate(live.url, response_format="b64_json").status_code == 200
                time.sleep(1.5)  # the URL's TTL passes; the sweeper (every 0.25 s) cannot delete it
                assert_envelope(httpx.get(url, timeout=10), 404, code="image_not_found")
                assert our_files(images) == [url.rsplit("/", 1)[1]]  # still there: the disk is read-only
                # The first sweep after the TTL warns; a loaded machine may run it late, so wait for it, then
                # let a few more sweeps (every 0.25 s) pass: each of them must stay silent.
                wait_for_warning(caplog, "cannot be swept")
                time.sleep(1.0)
                messages = [r.getMessage() for r in storage_warnings(caplog)]
                assert sum("cannot store images" in m for m in messages) == 1
                assert sum("cannot be swept" in m for m in messages) == 1  # several sweeps, one warning
                assert not [r for r in caplog.records if r.exc_info]
            finally:
                remount(images, "rw")


def test_a_full_data_directory_answers_uploads_507_and_keeps_nothing_of_them(
    tiny_model_dirs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    def upload(live, size: int) -> httpx.Response:
        content = {"file": ("in.png", b"x" * size)}
        return httpx.post(live.url + "/v1/files", files=content, data={"purpose": "vision"}, timeout=60)

    with tmpfs(tmp_path / "data", 1024) as data:
        settings = Settings(models=(ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"]),))
        settings = Settings(**{**settings.__dict__, "data_dir": data, "default_model": TINY})
        with running_server(settings) as live:
            first = upload(live, 100)
            assert first.status_code == 200, first.text
            filler = fill(data, 16 * 4096)
            caplog.set_level(logging.WARNING)
            answer = upload(live, 256 * 1024)
            error = assert_envelope(answer, 507, code="insufficient_storage")
            assert error["type"] == "server_error"
            assert error["message"] == "The server cannot store files right now (no space left on device). Retry later."
            assert answer.headers["retry-after"] == "30"
            listed = httpx.get(live.url + "/v1/files", timeout=10).json()["data"]
            assert [f["id"] for f in listed] == [first.json()["id"]]  # nothing of the failed upload is listed
            assert [p.name for p in (data / "files").iterdir()] == [first.json()["id"]]  # nor left on disk
            assert not [r for r in caplog.records if r.exc_info]
            filler.unlink()
            assert upload(live, 256 * 1024).status_code == 200
