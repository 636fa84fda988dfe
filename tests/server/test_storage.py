"""The URL image store touches only the files it wrote (issue: the sweeper deleted a user's files)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from server.serving.files import ImageStore
from server.settings.config import Settings

from ..conftest import FAST, running_server, tiny_settings

TTL = 2.0


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past), follow_symlinks=False)


def _foreign_files(directory: Path, outside: Path) -> dict[str, Path]:
    """A new foreign file, an old one, a symlink with an image-like name, and a folder; all must survive."""
    thesis = directory / "thesis.docx"
    thesis.write_text("four years of work")
    notes = directory / "notes.txt"
    notes.write_text("fresh")
    target = outside / "precious.png"
    target.write_bytes(b"not Easel's")
    link = directory / ("A" * 43 + ".png")  # exactly Easel's own name pattern
    link.symlink_to(target)
    folder = directory / ("B" * 43 + ".png")
    folder.mkdir()
    for path in (thesis, target, link, folder):
        _age(path, 2 * 24 * 3600)
    return {"old": thesis, "new": notes, "link": link, "target": target, "folder": folder}


def test_sweep_deletes_only_its_own_expired_files(tmp_path: Path):
    directory, outside = tmp_path / "images", tmp_path / "outside"
    directory.mkdir()
    outside.mkdir()
    foreign = _foreign_files(directory, outside)
    store = ImageStore(directory, TTL)
    own = directory / store.save(b"png bytes", "png")
    stale_partial = directory / f".{'C' * 43}.png.part"
    stale_partial.write_bytes(b"half")
    _age(own, TTL + 1)
    _age(stale_partial, TTL + 1)

    assert store.sweep() == 2
    assert not own.exists() and not stale_partial.exists()
    for path in foreign.values():
        assert path.exists() or path.is_symlink(), path
    assert foreign["old"].read_text() == "four years of work"
    assert foreign["target"].read_bytes() == b"not Easel's"


def test_a_symlink_with_an_image_name_is_never_served(tmp_path: Path):
    directory, outside = tmp_path / "images", tmp_path / "outside"
    directory.mkdir()
    outside.mkdir()
    foreign = _foreign_files(directory, outside)
    _age(foreign["link"], 0)  # fresh, so only ownership can refuse it
    store = ImageStore(directory, 3600)
    assert store.read(foreign["link"].name) is None
    assert foreign["link"].is_symlink() and foreign["target"].exists()


def test_server_on_a_folder_of_other_files_leaves_them_alone(tiny_model_dirs, tmp_path: Path):
    directory, outside = tmp_path / "shared-folder", tmp_path / "outside"
    directory.mkdir()
    outside.mkdir()
    foreign = _foreign_files(directory, outside)
    settings: Settings = tiny_settings(tiny_model_dirs, image_dir=directory, url_ttl_seconds=1.0)
    with running_server(settings) as live:
        response = httpx.post(
            live.url + "/v1/images/generations",
            json={"prompt": "a red circle", "size": "256x256", **FAST},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        name = response.json()["data"][0]["url"].rsplit("/", 1)[1]
        own = directory / name
        deadline = time.monotonic() + 60  # only ends a hung test: a loaded machine may run the sweeps late
        while own.exists():  # several sweeps pass (every 0.25 s at this TTL)
            assert time.monotonic() < deadline, "the server's own expired image was not swept"
            time.sleep(0.1)
        time.sleep(0.6)
    for key, path in foreign.items():
        assert path.exists() or path.is_symlink(), key
    assert foreign["new"].read_text() == "fresh"
    assert foreign["target"].read_bytes() == b"not Easel's"
