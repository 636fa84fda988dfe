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
    * Truncated or corrupt files fail while decoding and answer 400 too.

Edit masks (OpenAI's semantics)
    The fully transparent pixels (alpha 0) of ``mask`` mark the area to repaint;
    the mask must have the image's dimensions. Without a mask, the image's own
    fully transparent pixels mark it. A mask without an alpha channel, an image
    without one and no mask, or an alpha channel with no fully transparent pixel
    (nothing would be edited) is refused with param ``mask``. The backends get
    the repaint area as a mode "L" image, 255 = repaint.

Colour
    Semi-transparent pixels are flattened over white, the way a page shows them;
    pixels under alpha 0 are repainted (edits) or become white (variations).
    16-bit greyscale is scaled to 8 bits. A 16-bit RGB PNG's transparent
    colour (tRNS) is matched on the 8-bit samples Pillow keeps, so colours
    within 1/256 of it per channel are transparent too.

Reading the files out of request bodies is :mod:`server.serving.uploads`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import Settings
from ..errors import APIError, invalid


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_upload_pixels)


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


def open_upload(data: bytes, param: str, limits: UploadLimits) -> Image.Image:
    """Decode an uploaded file completely, refusing anything unsafe or broken with a 400."""
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
        width, height = image.size
        if width * height > limits.max_pixels:
            raise invalid(
                param,
                f"The '{param}' image is {width}x{height} ({width * height} pixels); "
                f"the limit is {limits.max_pixels} pixels.",
            )
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise invalid(param, f"The '{param}' image has too many pixels to decode safely.") from None
    except APIError:
        raise
    except UnidentifiedImageError:
        raise invalid(param, f"The '{param}' file starts like a {name} file but its header is invalid.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise invalid(param, f"The '{param}' {name} file is truncated or corrupt: {exc}") from None
    if image_format == "PNG":
        _reduce_16_bit_colour_key(image, data)
    return ImageOps.exif_transpose(image)


def _reduce_16_bit_colour_key(image: Image.Image, data: bytes) -> None:
    # Pillow decodes a 16-bit RGB PNG to 8 bits (each sample's high byte) but keeps
    # its tRNS colour in 16 bits, so no pixel ever matches it and the transparency
    # is lost. Reduce the key the same way. The exact 16-bit samples are gone, so
    # colours within 1/256 of the key per channel turn transparent with it.
    bit_depth, colour_type = data[24], data[25]  # IHDR follows the signature and is always first
    key = image.info.get("transparency")
    if bit_depth == 16 and colour_type == 2 and isinstance(key, tuple):
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


def repaint_mask(image: Image.Image, mask: Image.Image | None) -> Image.Image:
    """Where to repaint, mode "L" 255/0, from the mask's alpha 0 pixels (or the image's)."""
    if mask is not None and mask.size != image.size:
        raise invalid(
            "mask",
            f"The mask is {mask.width}x{mask.height} but the image is {image.width}x{image.height}; "
            "they must have the same dimensions.",
        )
    source = mask if mask is not None else image
    alpha = alpha_band(source)
    if alpha is None:
        if mask is not None:
            raise invalid(
                "mask",
                "The mask has no alpha channel: its fully transparent pixels (alpha 0) mark the area to edit.",
            )
        raise invalid(
            "mask",
            "No mask was given and the image has no alpha channel, so nothing marks the area to edit: "
            "send a mask whose fully transparent pixels (alpha 0) cover it, or an image with such pixels.",
        )
    repaint = alpha.point([255] + [0] * 255)
    if repaint.getbbox() is None:
        owner = "mask" if mask is not None else "image (no mask was given)"
        raise invalid("mask", f"The {owner} has no fully transparent pixel (alpha 0): nothing would be edited.")
    return repaint


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


def decode_edit_inputs(
    image_data: bytes,
    image_param: str,
    mask_data: bytes | None,
    limits: UploadLimits,
    markup_data: bytes | None = None,
) -> tuple[Image.Image, Image.Image]:
    """The RGB image and the repaint mask (mode "L", 255 = repaint). CPU work: run in a thread."""
    image = open_upload(image_data, image_param, limits)
    if markup_data is not None:
        return flatten_to_rgb(image), markup_repaint(image, open_upload(markup_data, "markup", limits))
    mask = None if mask_data is None else open_upload(mask_data, "mask", limits)
    return flatten_to_rgb(image), repaint_mask(image, mask)


def markup_repaint(image: Image.Image, markup: Image.Image) -> Image.Image:
    """Where to repaint, from a markup layer: every pixel drawn on it (alpha > 0). Its colours are not read."""
    if markup.size != image.size:
        raise invalid(
            "markup",
            f"The markup is {markup.width}x{markup.height} but the image is {image.width}x{image.height}; "
            "they must have the same dimensions.",
        )
    alpha = alpha_band(markup)
    if alpha is None or alpha.point([255] + [0] * 255).getbbox() is None:
        raise invalid("markup", "The markup must be a transparent PNG with marks drawn on it: it has no clear pixel.")
    repaint = alpha.point([0] + [255] * 255)
    if repaint.getbbox() is None:
        raise invalid("markup", "The markup is fully transparent: nothing is drawn on it, so nothing would be edited.")
    return repaint


def decode_variation_input(data: bytes, limits: UploadLimits) -> Image.Image:
    """The RGB image, transparency flattened over white. CPU work: run in a thread."""
    return flatten_to_rgb(open_upload(data, "image", limits))
