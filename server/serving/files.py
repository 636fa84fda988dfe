"""The files a client gets: each image fitted to the requested size and encoded; ``url`` files kept until they expire.

Fitting. Backends generate at a native resolution near the requested aspect
ratio (:meth:`ModelInfo.native_size_for`). When that aspect ratio is within 2 %
of the request (rounding to the model's size multiple), the image is resized
straight to the requested size. When it differs more (models with a fixed
native size, like Karlo's 256x256, asked for 1792x1024), the image is first
center-cropped to the requested aspect ratio so nothing is stretched. Resizing
uses Lanczos.

Encoding. ``output_compression`` is the encoder quality for JPEG and WebP
(0-100, default 100). PNG is lossless and always written the same way, so
identical pixels give identical bytes. GIF: a job's frames for one image
(``ImageJob.frames``) become one looping animation. SVG: the fitted image is
traced to coloured vector paths by vtracer, at most :data:`.formats.TRACE_MAX_SIDE`
pixels a side, and the SVG is given the requested size (its ``viewBox`` is
the traced raster's, so it scales exactly).

URL storage (:class:`ImageStore`). The store owns only the files it writes: names it makes itself (an
unguessable id, ``secrets.token_urlsafe(32)``, 256 bits, plus the extension)
and the partial writes behind them. Anything else in the directory (a user's
own files, symlinks, folders) is never read, served or deleted, so pointing
``--image-dir`` at a folder that holds other files is safe.

A file's modification time is its birth, so expiry survives restarts when
``--image-dir`` is reused: an expired file is refused (404) and deleted on
access, and a periodic sweep deletes the rest.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import math
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .formats import encode_gif, trace_svg

log = logging.getLogger("easel.files")

ASPECT_TOLERANCE = 0.02  # relative aspect-ratio difference resized without cropping

MEDIA_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "svg": "image/svg+xml",
}
_ID = r"[A-Za-z0-9_-]{43}"  # secrets.token_urlsafe(32)
_EXTENSION = "(" + "|".join(MEDIA_TYPES) + ")"  # a MEDIA_TYPES key
_FILE_NAME = re.compile(rf"{_ID}\.{_EXTENSION}")
_PARTIAL_NAME = re.compile(rf"\.{_ID}\.{_EXTENSION}\.part")  # a write in progress, or one a crash left behind
# The disk's conditions, not a bug: the store answers them (507, a warning) instead of raising a traceback.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO})
STORAGE_RETRY_AFTER_SECONDS = 30


class StorageUnavailable(Exception):
    """The image directory cannot take a file now (full, read-only, no permission): a 507, not a bug."""

    def __init__(self, error: OSError) -> None:
        reason = os.strerror(error.errno) if error.errno is not None else str(error)
        super().__init__(
            f"The server cannot store images for URLs right now ({reason.lower()}). "
            "Ask for response_format b64_json, or retry later."
        )
        self.errno = error.errno


def center_crop_to_aspect(image: Image.Image, width: int, height: int) -> Image.Image:
    target = width / height
    w, h = image.size
    if w / h > target:
        new_w = max(1, round(h * target))
        left = (w - new_w) // 2
        return image.crop((left, 0, left + new_w, h))
    new_h = max(1, round(w / target))
    top = (h - new_h) // 2
    return image.crop((0, top, w, top + new_h))


def resize_exactly(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` stretched to ``width`` x ``height`` (Lanczos), or itself if it has that size."""
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)


def fit_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` at exactly ``width`` x ``height``: cropped to the aspect ratio if needed, then resized."""
    w, h = image.size
    if abs(math.log((w / h) / (width / height))) > ASPECT_TOLERANCE:
        image = center_crop_to_aspect(image, width, height)
    return resize_exactly(image, width, height)


def encode(image: Image.Image, output_format: str, compression: int) -> bytes:
    buffer = io.BytesIO()
    rgb = image.convert("RGB")
    if output_format == "png":
        rgb.save(buffer, format="PNG")
    elif output_format == "jpeg":
        rgb.save(buffer, format="JPEG", quality=compression)
    elif output_format == "webp":
        rgb.save(buffer, format="WEBP", quality=compression)
    else:
        raise ValueError(f"unknown output format {output_format!r}")
    return buffer.getvalue()


@dataclass(frozen=True)
class Encoding:
    """How a request's images become files."""

    output_format: str
    compression: int = 100  # jpeg, webp
    frames: int = 1  # gif: frames per image
    frame_duration_ms: int = 200  # gif
    trace_detail: str = "medium"  # svg: a TRACE_SETTINGS key


def finish_images(images: list[Image.Image], width: int, height: int, encoding: Encoding) -> list[bytes]:
    """Fit and encode every image, or every image's frames (CPU work: run it in a thread, not on the event loop).

    One image (one GIF frame) at a time is held at the requested size: fitted, a 2048x2048 frame takes 12 MiB,
    and ten GIFs of 16 frames, fitted all at once, took gigabytes.
    """
    if encoding.output_format == "gif":
        step = encoding.frames
        return [
            encode_gif(
                (fit_to_size(frame, width, height) for frame in images[i : i + step]), encoding.frame_duration_ms
            )
            for i in range(0, len(images), step)
        ]
    if encoding.output_format == "svg":
        return [trace_svg(fit_to_size(image, width, height), encoding.trace_detail) for image in images]
    return [encode(fit_to_size(image, width, height), encoding.output_format, encoding.compression) for image in images]


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
        self._conditions: set[tuple[str, int | None]] = set()  # (what failed, errno) already warned about
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def sweep_interval(self) -> float:
        """Often enough that a file outlives its TTL by at most a quarter of it (and at most a minute)."""
        return max(0.25, min(60.0, self.ttl_seconds / 4))

    def save_all(self, files: list[bytes], extension: str) -> list[str]:
        """Store one request's files; their names for the URLs. All or none: a failed write removes the others."""
        names: list[str] = []
        try:
            for data in files:
                names.append(self.save(data, extension))
        except StorageUnavailable:
            for name in names:
                _remove_quietly(self.directory / name)
            raise
        self._conditions.clear()  # the disk takes whole answers again: warn anew when it next fails
        return names

    def save(self, data: bytes, extension: str) -> str:
        """Store ``data``; returns the file name to put in the URL. A full or read-only disk: StorageUnavailable."""
        name = f"{secrets.token_urlsafe(32)}.{extension}"
        temporary = self.directory / f".{name}.part"
        try:
            # O_EXCL: never write through a file or symlink someone else put at this name.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            descriptor = os.open(temporary, flags, 0o644)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            os.replace(temporary, self.directory / name)  # never serve a half-written file
        except OSError as error:
            _remove_quietly(temporary)  # a half-written file holds the space the disk lacks
            if error.errno not in STORAGE_ERRNOS:
                raise
            self._warn_once(error, "cannot store images for URLs")
            raise StorageUnavailable(error) from None
        return name

    def _warn_once(self, error: OSError, doing: str) -> None:
        """One warning per disk condition (full, read-only, ...) until the store works again, not one per request."""
        if (doing, error.errno) not in self._conditions:
            self._conditions.add((doing, error.errno))
            log.warning("image directory %s %s: %s", self.directory, doing, os.strerror(error.errno or 0))

    def read(self, name: str) -> tuple[bytes, float] | None:
        """The live file's bytes and expiry time, or None (unknown, not ours, or expired). File I/O: run in a thread."""
        if not _FILE_NAME.fullmatch(name):
            return None
        path = self.directory / name
        status = _own_regular_file(path)
        if status is None:
            return None
        expires = status.st_mtime + self.ttl_seconds
        if expires <= time.time():
            _remove_quietly(path)  # expired is a 404 even where the file cannot be deleted (a read-only disk)
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
        try:
            for path in self.directory.iterdir():
                if not (_FILE_NAME.fullmatch(path.name) or _PARTIAL_NAME.fullmatch(path.name)):
                    continue
                status = _own_regular_file(path)
                if status is not None and status.st_mtime + self.ttl_seconds <= now:
                    path.unlink(missing_ok=True)
                    removed += 1
        except OSError as error:
            self._warn_once(error, "cannot be swept of expired images")
        if removed:
            log.debug("swept %d expired images", removed)
        return removed


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only disk: nothing more to do, and the answer does not change
        path.unlink(missing_ok=True)
