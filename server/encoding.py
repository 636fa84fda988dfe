"""From backend images to the bytes a client gets: exact requested size, then PNG/JPEG/WebP.

Backends generate at a native resolution near the requested aspect ratio
(:meth:`ModelInfo.native_size_for`). When that aspect ratio is within 2 % of
the request (rounding to the model's size multiple), the image is resized
straight to the requested size. When it differs more (models with a fixed
native size, like Karlo's 256x256, asked for 1792x1024), the image is first
center-cropped to the requested aspect ratio so nothing is stretched. Resizing
uses Lanczos.

``output_compression`` is the encoder quality for JPEG and WebP (0-100,
default 100). PNG is lossless and always written the same way, so identical
pixels give identical bytes.
"""

from __future__ import annotations

import base64
import io
import math

from PIL import Image

ASPECT_TOLERANCE = 0.02  # relative aspect-ratio difference resized without cropping


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


def base64_text(data: bytes) -> str:
    """``data`` as the base64 text of a ``b64_json`` field."""
    return base64.b64encode(data).decode("ascii")


def finish_images(
    images: list[Image.Image], width: int, height: int, output_format: str, compression: int
) -> list[bytes]:
    """Resize and encode every image (CPU work: run it in a thread, not on the event loop)."""
    return [encode(fit_to_size(image, width, height), output_format, compression) for image in images]
