"""``easel batch download``: a finished batch's output and error files, and optionally the images they hold.

The files are written byte for byte as the server holds them (``GET
/v1/files/{id}/content``), under the names the server gave them. With
``--images``, each answer line's ``b64_json`` images are decoded to
``CUSTOM_ID.EXT`` (``CUSTOM_ID-I.EXT`` when the line has several), where EXT is
what the bytes are.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

from .batch_client import BatchClient
from .image_request import CommandError

# Leading bytes of each image format the API answers with.
SIGNATURES = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpeg"), (b"GIF8", "gif"), (b"<svg", "svg"), (b"<?xml", "svg"))


def download(client: BatchClient, batch: dict[str, Any], directory: Path, images: bool) -> list[Path]:
    """Write the batch's files (and images) into ``directory``; the paths written, in order."""
    file_ids = [batch.get(key) for key in ("output_file_id", "error_file_id")]
    if not any(file_ids):
        raise CommandError(f"batch {batch['id']} is {batch['status']}: it has no output or error file yet")
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for file_id in filter(None, file_ids):
        name = safe_name(str(client.file(file_id).get("filename") or f"{file_id}.jsonl"))
        data = client.content(file_id)
        path = directory / name
        path.write_bytes(data)
        written.append(path)
        if images and file_id == batch.get("output_file_id"):
            written.extend(_images(data, directory))
    return written


def safe_name(name: str) -> str:
    """A file name that stays in its directory: letters, digits, ``._-``; anything else becomes ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return cleaned[:200] or "unnamed"


def image_extension(data: bytes, declared: object) -> str:
    for signature, extension in SIGNATURES:
        if data.startswith(signature):
            return extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return str(declared) if isinstance(declared, str) and declared.isalnum() else "bin"


def _images(output: bytes, directory: Path) -> list[Path]:
    written: list[Path] = []
    for number, text in enumerate(output.decode("utf-8").splitlines(), start=1):
        line = json.loads(text)
        body = (line.get("response") or {}).get("body") or {}
        pictures = [item["b64_json"] for item in body.get("data") or () if item.get("b64_json")]
        stem = safe_name(str(line.get("custom_id") or f"line-{number}"))
        for index, encoded in enumerate(pictures):
            try:
                data = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise CommandError(f"line {number} ({stem}) holds an image that is not base64") from None
            suffix = f"-{index}" if len(pictures) > 1 else ""
            path = directory / f"{stem}{suffix}.{image_extension(data, body.get('output_format'))}"
            path.write_bytes(data)
            written.append(path)
    return written
