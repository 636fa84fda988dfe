"""Images served by URL (``response_format: url``), deleted when they expire.

The store owns only the files it writes: names it makes itself (an
unguessable id, ``secrets.token_urlsafe(32)``, 256 bits, plus the extension)
and the partial writes behind them. Anything else in the directory (a user's
own files, symlinks, folders) is never read, served or deleted, so pointing
``--image-dir`` at a folder that holds other files is safe.

A file's modification time is its birth, so expiry survives restarts when
``--image-dir`` is reused: an expired file is refused (404) and deleted on
access, and a periodic sweep deletes the rest.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import time
from pathlib import Path

log = logging.getLogger("easel.storage")

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_ID = r"[A-Za-z0-9_-]{43}"  # secrets.token_urlsafe(32)
_EXTENSION = "(png|jpeg|webp)"  # a MEDIA_TYPES key
_FILE_NAME = re.compile(rf"{_ID}\.{_EXTENSION}")
_PARTIAL_NAME = re.compile(rf"\.{_ID}\.{_EXTENSION}\.part")  # a write in progress, or one a crash left behind


def _own_regular_file(path: Path) -> os.stat_result | None:
    """The file's status if it is a regular file (never a symlink, whose target is not ours); else None."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return None
    return status if stat.S_ISREG(status.st_mode) else None


class ImageStore:
    def __init__(self, directory: Path, ttl_seconds: float) -> None:
        self.directory = directory
        self.ttl_seconds = ttl_seconds
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def sweep_interval(self) -> float:
        """Often enough that a file outlives its TTL by at most a quarter of it (and at most a minute)."""
        return max(0.25, min(60.0, self.ttl_seconds / 4))

    def save(self, data: bytes, extension: str) -> str:
        """Store ``data``; returns the file name to put in the URL."""
        name = f"{secrets.token_urlsafe(32)}.{extension}"
        temporary = self.directory / f".{name}.part"
        # O_EXCL: never write through a file or symlink someone else put at this name.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, self.directory / name)  # never serve a half-written file
        return name

    def read(self, name: str) -> tuple[bytes, float] | None:
        """The live file's bytes and expiry time, or None (unknown, not ours, or expired). File I/O: run it in a thread."""
        if not _FILE_NAME.fullmatch(name):
            return None
        path = self.directory / name
        status = _own_regular_file(path)
        if status is None:
            return None
        expires = status.st_mtime + self.ttl_seconds
        if expires <= time.time():
            path.unlink(missing_ok=True)
            return None
        try:
            # O_NOFOLLOW: a symlink swapped in since the check is refused. Read whole (images are
            # small) so a sweep between the check and the send cannot break the response.
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        with os.fdopen(descriptor, "rb") as file:
            return file.read(), expires

    def sweep(self) -> int:
        """Delete this store's expired files (and stale partial writes); returns how many."""
        now = time.time()
        removed = 0
        for path in self.directory.iterdir():
            if not (_FILE_NAME.fullmatch(path.name) or _PARTIAL_NAME.fullmatch(path.name)):
                continue
            status = _own_regular_file(path)
            if status is not None and status.st_mtime + self.ttl_seconds <= now:
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.debug("swept %d expired images", removed)
        return removed
