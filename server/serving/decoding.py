"""Uploaded image files, decoded safely and turned into what the backends take.

Formats
    PNG, JPEG and WebP, recognised by their first bytes; the declared content
    type and file name are ignored. Anything else (GIF, BMP, TIFF, HEIC, text)
    is refused. Animated files give their first frame. JPEG EXIF orientation is
    applied, so an image is used the way viewers show it.

Limits (``UploadLimits``; answers are 400 ``invalid_request_error`` naming the
part, ``image`` or ``mask``, as OpenAI answers oversized uploads)
    * 50 MiB per file, image and mask alike (OpenAI's limit for GPT image
      models; a mask has the image's dimensions, so it gets the same room);
      ``--max-upload-mb``. The request body limit (``--max-body-mb``, 413)
      applies to the whole request first.
    * 40 megapixels per image (``--max-upload-megapixels``), read from the file header *before* any pixel is
      decoded (``Image.open`` is lazy), so a small file claiming huge
      dimensions (a decompression bomb) costs nothing. Pillow's own bomb check
      is turned into the same 400.
    * Decoding costs what the image is worth: a JPEG is decoded at the smallest
      DCT scale that covers the size its job uses it at (``Fit``), every image
      is shrunk to that size before any conversion, and the decoded pixels'
      memory is capped by ``--max-decode-mb`` before decoding (docs/api.md, "Uploads").
    * A Huffman JPEG claiming more 8x8 blocks than its bytes can code (each
      costs a bit) is refused before decoding; truncated or corrupt files fail
      while decoding. Both answer 400.

Colour
    Semi-transparent pixels are flattened over white, the way a page shows them;
    pixels under alpha 0 are repainted (edits) or become white (variations).
    16-bit greyscale is scaled to 8 bits. A 16-bit RGB PNG's transparent
    colour (tRNS) is matched on the 8-bit samples Pillow keeps, so colours
    within 1/256 of it per channel are transparent too.

Reading the files out of request bodies is :mod:`server.serving.uploads`; edit masks
are :mod:`server.serving.masks`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..http.errors import invalid
from ..settings.config import DEFAULT_MAX_DECODE_MB, Settings


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_decoded_bytes: int = int(DEFAULT_MAX_DECODE_MB * 1024 * 1024)

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_upload_pixels,
            max_decoded_bytes=settings.max_decode_bytes,
        )


# An upload's own size (as viewed, EXIF orientation applied) -> the size its job uses it at.
Fit = Callable[[int, int], tuple[int, int]]

_RELEASE_AFTER_BYTES = 8 * 1024 * 1024  # decodes this large hand their freed memory back to the system


_ACCEPTED = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}

# Formats people commonly send by mistake, named in the refusal.
_OTHER_SIGNATURES = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
)


def sniff_format(data: bytes) -> str | None:
    """Pillow's format name for PNG, JPEG or WebP bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _describe_unaccepted(data: bytes) -> str:
    for signature, name in _OTHER_SIGNATURES:
        if data.startswith(signature):
            return f"a {name} file"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return "an HEIF/AVIF file"
    return "not a recognised image"


def inspect_upload(data: bytes, param: str, limits: UploadLimits) -> Image.Image:
    """The upload opened lazily (header read, no pixel decoded), refused with a 400 if unsafe or lying."""
    if not data:
        raise invalid(param, f"The '{param}' file is empty.")
    if len(data) > limits.max_bytes:
        raise invalid(param, f"The '{param}' file is {len(data)} bytes; the limit is {limits.max_bytes} bytes.")
    image_format = sniff_format(data)
    if image_format is None:
        description = _describe_unaccepted(data)
        raise invalid(param, f"The '{param}' file is {description}; upload a PNG, JPEG or WebP image.")
    name = _ACCEPTED[image_format]
    try:
        image = Image.open(io.BytesIO(data), formats=[image_format])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise invalid(param, f"The '{param}' image has too many pixels to decode safely.") from None
    except UnidentifiedImageError:
        raise invalid(param, f"The '{param}' file starts like a {name} file but its header is invalid.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise invalid(param, f"The '{param}' {name} file is truncated or corrupt: {exc}") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise invalid(
            param,
            f"The '{param}' image is {width}x{height} ({width * height} pixels); "
            f"the limit is {limits.max_pixels} pixels.",
        )
    if image_format == "JPEG" and len(data) < _least_jpeg_bytes(data, image):
        raise invalid(
            param,
            f"The '{param}' JPEG file is truncated or corrupt: its header says {width}x{height}, "
            f"more than its {len(data)} bytes can hold.",
        )
    return image


def decode_upload(image: Image.Image, param: str, limits: UploadLimits, fit: Fit | None = None) -> Image.Image:
    """Decode an inspected upload, no larger than ``fit`` needs it (all of it without ``fit``)."""
    name = _ACCEPTED[str(image.format)]
    sent_size = image.size  # a JPEG draft changes image.size; the target is always the sent size's cover
    if image.format == "JPEG" and (drafted := _target(image, sent_size, fit)) is not None:
        image.draft(None, drafted)  # decode at the smallest DCT scale that still covers the target
    cost = decoded_bytes(image)
    if cost > limits.max_decoded_bytes:
        raise invalid(
            param,
            f"The '{param}' image is {image.width}x{image.height} ({image.mode}); decoding it would take "
            f"{cost / 2**20:.1f} MiB, over this server's limit of {limits.max_decoded_bytes / 2**20:.1f} MiB. "
            "Send it smaller, or as a JPEG.",
        )
    if image.format == "PNG":
        _reduce_16_bit_colour_key(image)
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise invalid(param, f"The '{param}' image has too many pixels to decode safely.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise invalid(param, f"The '{param}' {name} file is truncated or corrupt: {exc}") from None
    size = _target(image, sent_size, fit)  # after decoding: a PNG may carry its orientation after the pixels
    decoded = image if size is None or image.size == size else _resized(image, size)
    if decoded is not image:
        image.close()  # the full-size pixels go now, before any conversion copies the small ones
    if cost >= _RELEASE_AFTER_BYTES:
        release_freed_memory()
    return ImageOps.exif_transpose(decoded)


def open_upload(data: bytes, param: str, limits: UploadLimits, fit: Fit | None = None) -> Image.Image:
    """Decode an uploaded file, refusing anything unsafe or broken with a 400; no larger than ``fit`` needs."""
    return decode_upload(inspect_upload(data, param, limits), param, limits, fit)


def viewed_size(image: Image.Image) -> tuple[int, int]:
    """The size as viewers show it: EXIF orientations 5 to 8 turn the image a quarter."""
    width, height = image.size
    return (height, width) if _quarter_turned(image) else (width, height)


def decoded_bytes(image: Image.Image) -> int:
    """Memory Pillow takes to hold the pixels of an opened image (WebP's decoder holds a second copy)."""
    mode = image.mode
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    copies = 2 if image.format == "WEBP" else 1
    return image.width * image.height * per_pixel * copies


def _quarter_turned(image: Image.Image) -> bool:
    # From the EXIF bytes Pillow has read so far: getexif() would decode a whole PNG to look for them.
    exif = image.info.get("exif")
    if not isinstance(exif, bytes):
        return False
    orientation = Image.Exif()
    orientation.load(exif)
    return orientation.get(ExifTags.Base.Orientation) in (5, 6, 7, 8)


def _target(image: Image.Image, sent_size: tuple[int, int], fit: Fit | None) -> tuple[int, int] | None:
    """The size to decode ``image`` at, in its stored orientation; None for all of it."""
    size = None if fit is None else _cover_size(sent_size, fit, image)
    if size is None or not _quarter_turned(image):
        return size
    return size[1], size[0]


def _cover_size(stored: tuple[int, int], fit: Fit, image: Image.Image) -> tuple[int, int] | None:
    """The smallest size, in viewed orientation and with the aspect ratio sent, that covers what ``fit`` needs.

    None when the image sent is no larger than that.
    """
    width, height = (stored[1], stored[0]) if _quarter_turned(image) else stored
    needed = fit(width, height)
    scale = max(needed[0] / width, needed[1] / height)
    if scale >= 1:
        return None
    return max(needed[0], round(width * scale)), max(needed[1], round(height * scale))


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    # A colour key (PNG tRNS) or a palette only survives nearest-neighbour sampling.
    if image.mode in ("1", "P") or "transparency" in image.info:
        return image.resize(size, Image.Resampling.NEAREST)
    factor = min(image.width // size[0], image.height // size[1])
    reduced = _reduce_in_strips(image, factor) if factor >= 2 else image
    return reduced.resize(size, Image.Resampling.LANCZOS)


def _reduce_in_strips(image: Image.Image, factor: int) -> Image.Image:
    """``image.reduce(factor)`` a strip at a time: for RGBA, Pillow premultiplies alpha in a full-size copy.

    Strips whose height is a multiple of ``factor`` reduce to exactly the rows the whole image would.
    """
    width, height = image.size
    rows = factor * max(1, _STRIP_ROWS // factor)
    reduced = Image.new(image.mode, (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        reduced.paste(image.crop((0, top, width, min(height, top + rows))).reduce(factor), (0, top // factor))
    reduced.info = image.info.copy()  # EXIF orientation, applied after decoding
    return reduced


_STRIP_ROWS = 256


def _least_jpeg_bytes(data: bytes, image: Image.Image) -> int:
    """The fewest bytes a Huffman-coded JPEG of this size can have: a bit per MCU (0 for arithmetic coding)."""
    if _jpeg_frame_marker(data) in _ARITHMETIC_FRAMES:
        return 0
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)]
    h_max, v_max = max(layer[1] for layer in layers), max(layer[2] for layer in layers)
    mcus = math.ceil(image.width / (8 * h_max)) * math.ceil(image.height / (8 * v_max))
    return mcus // 8


_ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The SOFn marker's second byte, walking the segments that precede it."""
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def release_freed_memory() -> None:
    """Hand memory freed by a large decode back to the system (glibc keeps it in its arenas otherwise)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc: musl, macOS
        return None


_malloc_trim = _load_malloc_trim()


def _reduce_16_bit_colour_key(image: Image.Image) -> None:
    # Pillow decodes a 16-bit RGB PNG to 8 bits (each sample's high byte) but keeps
    # its tRNS colour in 16 bits, so no pixel ever matches it and the transparency
    # is lost. Reduce the key the same way. The exact 16-bit samples are gone, so
    # colours within 1/256 of the key per channel turn transparent with it.
    tile = getattr(image, "tile", None) or []  # how Pillow will decode it, known before decoding
    sixteen_bit_rgb = bool(tile) and tile[0].args == "RGB;16B"
    key = image.info.get("transparency")
    if sixteen_bit_rgb and isinstance(key, tuple):
        image.info["transparency"] = tuple(value >> 8 for value in key)


def alpha_band(image: Image.Image) -> Image.Image | None:
    """The alpha channel as mode "L", or None when the file carries no transparency."""
    image = _to_8_bit(image)
    if not _has_transparency(image):
        return None
    return image.convert("RGBA").getchannel("A")


def flatten_to_rgb(image: Image.Image) -> Image.Image:
    """RGB, with transparency flattened over white."""
    image = _to_8_bit(image)
    if not _has_transparency(image):
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _has_transparency(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return "transparency" in image.info


def _to_8_bit(image: Image.Image) -> Image.Image:
    # Pillow clips 16/32-bit greyscale to 255 when converting; scale it instead. A transparent
    # grey level (PNG tRNS) becomes an alpha channel, which Pillow's conversion would not give.
    if not (image.mode == "I" or image.mode.startswith("I;16")):
        return image
    values = np.asarray(image).astype(np.int64)
    grey = Image.fromarray((values.clip(0, 65535) >> 8).astype(np.uint8))
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return grey
    alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8))
    return Image.merge("LA", (grey, alpha))


def decode_variation_input(data: bytes, limits: UploadLimits, fit: Fit | None = None) -> Image.Image:
    """The RGB image, transparency flattened over white. CPU work: run in a thread."""
    return flatten_to_rgb(open_upload(data, "image", limits, fit))
