"""Image files that cost more to decode than they are worth: the hostile-input suite, the decoding tests and
``benchmarks/bench_uploads.py`` build them here."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def lying_jpeg(width: int = 6000, height: int = 6000) -> bytes:
    """A real 16x16 JPEG whose frame header claims ``width`` x ``height`` (the audit's 633-byte file)."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (200, 30, 30)), "JPEG"))
    frame = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, height, width)
    return bytes(data)


def lying_png(width: int = 6000, height: int = 6000) -> bytes:
    """A real 16x16 PNG whose IHDR (with a correct CRC) claims ``width`` x ``height``."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (200, 30, 30))))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def lying_webp(width: int = 6000, height: int = 6000) -> bytes:
    """A real 16x16 lossy WebP whose VP8 frame header claims ``width`` x ``height``."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (200, 30, 30)), "WEBP"))
    start = data.index(b"\x9d\x01\x2a")  # the VP8 key frame's start code, then 14-bit width and height
    struct.pack_into("<HH", data, start + 3, width, height)
    return bytes(data)


def zeros_png(width: int = 6300, height: int = 6300, mode: str = "RGB") -> bytes:
    """A real, valid PNG of one colour: 39.7 megapixels in 115 KB at the defaults."""
    return encode(Image.new(mode, (width, height)))
