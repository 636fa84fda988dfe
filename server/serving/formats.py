"""Easel's extension formats: GIF animations and SVG traces (:func:`.files.finish_images` calls them).

GIF: a job's frames for one image become one looping animation, each frame with its own adaptive palette. SVG:
the fitted image is traced to coloured vector paths by vtracer, at most :data:`TRACE_MAX_SIDE` pixels a side,
and the SVG is given the requested size (its ``viewBox`` is the traced raster's, so it scales exactly).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable

from PIL import Image

TRACE_MAX_SIDE = 512  # finer tracing mostly follows resampling ripples: larger files, no more shape
# vtracer settings per effort: colour precision (bits per channel), layer difference, speckle filter (pixels).
TRACE_SETTINGS = {
    "none": (4, 48, 16),
    "minimal": (4, 48, 16),
    "low": (5, 32, 8),
    "medium": (6, 16, 4),  # vtracer's own defaults
    "high": (7, 12, 2),
    "xhigh": (8, 8, 1),
    "max": (8, 4, 1),
}
_SVG_ROOT = re.compile(r"<svg\b[^>]*>")


def encode_gif(frames: Iterable[Image.Image], frame_duration_ms: int) -> bytes:
    """A looping animated GIF; each frame gets its own adaptive palette.

    ``frames`` is read one frame at a time: Pillow keeps each as a palette image (1 byte a pixel) until it writes
    the file, so only one full-colour frame is held at once.
    """
    buffer = io.BytesIO()
    rgb = (frame.convert("RGB") for frame in frames)
    first = next(rgb)
    first.save(buffer, format="GIF", save_all=True, append_images=rgb, duration=frame_duration_ms, loop=0)
    return buffer.getvalue()


def trace_svg(image: Image.Image, detail: str) -> bytes:
    """``image`` traced to an SVG of its own size (vtracer, stacked colour layers of spline paths)."""
    import vtracer  # a compiled extension, loaded on the first SVG request

    width, height = image.size
    scale = min(1.0, TRACE_MAX_SIDE / max(width, height))
    traced_width, traced_height = max(1, round(width * scale)), max(1, round(height * scale))
    raster = _png(image, traced_width, traced_height)
    precision, layer_difference, speckle = TRACE_SETTINGS[detail]
    svg = vtracer.convert_raw_image_to_svg(
        raster,
        img_format="png",
        colormode="color",
        hierarchical="stacked",
        mode="spline",
        color_precision=precision,
        layer_difference=layer_difference,
        filter_speckle=speckle,
        path_precision=2,
    )
    root = (
        f'<svg version="1.1" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {traced_width} {traced_height}">'
    )
    return _SVG_ROOT.sub(root, svg, count=1).encode("utf-8")


def _png(image: Image.Image, width: int, height: int) -> bytes:
    """``image`` at ``width`` x ``height`` as PNG, written as :func:`.files.encode` writes PNGs."""
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()
