"""Mask helpers for edits: keep every unmasked pixel of the original exactly.

Backends generate at their native size; the engine resizes to the request
size. Resizing alters pixels, so after resizing the engine calls
:func:`composite_unmasked` at the input's full resolution: outside the mask
the result is the original, bit for bit; inside, the generated image, blended
over a few pixels just inside the mask's edge so the seam does not show.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

REPAINT_THRESHOLD = 128  # mask value at or above which a pixel is repainted


def binary_repaint_mask(mask: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """Float array (H, W): 1 where the pixel is repainted, 0 where it is kept.

    When resizing, a pixel is repainted if any part of it was, so the mask
    never shrinks.
    """
    mask = mask.convert("L")
    if size is not None and mask.size != size:
        resized = mask.resize(size, Image.Resampling.BILINEAR)
        return (np.asarray(resized) > 0).astype(np.float32)
    return (np.asarray(mask) >= REPAINT_THRESHOLD).astype(np.float32)


def feathered_alpha(repaint: np.ndarray, feather: float) -> np.ndarray:
    """Blend weight of the generated image: 0 outside the mask, ramping to 1 inside it."""
    if feather <= 0:
        return repaint
    blurred = Image.fromarray((repaint * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(feather))
    # The blur spills outward as well; the minimum keeps it inside the mask only.
    return np.minimum(repaint, np.asarray(blurred, dtype=np.float32) / 255.0)


def composite_unmasked(
    original: Image.Image, generated: Image.Image, mask: Image.Image, *, feather: float | None = None
) -> Image.Image:
    """``generated`` inside ``mask`` (255 = repaint), ``original`` outside, at ``original``'s size.

    ``generated`` is resized to ``original`` if needed, ``mask`` too (the
    repaint region grows rather than shrinks). ``feather`` is the blur radius
    in pixels of the blend at the mask's inner edge; default 1/128 of the
    shorter side, at least 1.
    """
    original = original.convert("RGB")
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.Resampling.BICUBIC)
    if feather is None:
        feather = max(1.0, min(original.size) / 128)
    repaint = binary_repaint_mask(mask, original.size)
    alpha = feathered_alpha(repaint, feather)[..., None]
    kept = np.asarray(original, dtype=np.float32)
    new = np.asarray(generated.convert("RGB"), dtype=np.float32)
    blended = np.where(alpha > 0, alpha * new + (1 - alpha) * kept, kept)
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), "RGB")
