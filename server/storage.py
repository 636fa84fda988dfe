"""Images served by URL (``response_format: url``), deleted when they expire.

Each image is one file named by an unguessable id (``secrets.token_urlsafe(32)``,
256 bits) plus its extension. The file's modification time is its birth, so
expiry survives restarts when ``--image-dir`` is reused: a file older than the
TTL is refused (404) and deleted on access, and a periodic sweep deletes the rest.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from pathlib import Path

log = logging.getLogger("easel.storage")

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_FILE_NAME = re.compile(r"[A-Za-z0-9_-]{43}\.(png|jpeg|webp)")  # token_urlsafe(32) + a MEDIA_TYPES key


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
        temporary.write_bytes(data)
        os.replace(temporary, self.directory / name)  # never serve a half-written file
        return name

    def expires_at(self, path: Path) -> float:
        return path.stat().st_mtime + self.ttl_seconds

    def open(self, name: str) -> tuple[Path, float] | None:
        """The live file for ``name`` and its expiry time, or None (unknown, malformed or expired)."""
        if not _FILE_NAME.fullmatch(name):
            return None
        path = self.directory / name
        try:
            expires = self.expires_at(path)
        except FileNotFoundError:
            return None
        if expires <= time.time():
            path.unlink(missing_ok=True)
            return None
        return path, expires

    def read(self, name: str) -> tuple[bytes, float] | None:
        """The live file's bytes and expiry time, or None (see :meth:`open`). File I/O: run it in a thread."""
        found = self.open(name)
        if found is None:
            return None
        path, expires = found
        try:
            # Read whole (images are small) so a sweep between the check and the send cannot break the response.
            return path.read_bytes(), expires
        except FileNotFoundError:
            return None

    def sweep(self) -> int:
        """Delete every expired file (and stale partial writes); returns how many."""
        now = time.time()
        removed = 0
        for path in self.directory.iterdir():
            try:
                if path.is_file() and self.expires_at(path) <= now:
                    path.unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.debug("swept %d expired images", removed)
        return removed
