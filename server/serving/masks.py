"""Edit masks: where to repaint, from the mask's alpha (OpenAI's semantics), the image's own, or a markup layer.

The fully transparent pixels (alpha 0) of ``mask`` mark the area to repaint;
the mask must have the image's dimensions. Without a mask, the image's own
fully transparent pixels mark it. A mask without an alpha channel, an image
without one and no mask, or an alpha channel with no fully transparent pixel
(nothing would be edited) is refused with param ``mask``. A ``markup`` layer
marks the area by what is drawn on it (alpha > 0); its colours are not read.
The backends get the repaint area as a mode "L" image, 255 = repaint.
"""

from __future__ import annotations

from PIL import Image

from ..errors import invalid
from .decoding import Fit, UploadLimits, alpha_band, decode_upload, flatten_to_rgb, inspect_upload, viewed_size


def decode_edit_inputs(
    image_data: bytes,
    image_param: str,
    mask_data: bytes | None,
    limits: UploadLimits,
    fit: Fit | None = None,
    markup_data: bytes | None = None,
) -> tuple[Image.Image, Image.Image]:
    """The RGB image and the repaint mask (mode "L", 255 = repaint). CPU work: run in a thread."""
    guide_param, guide_data = ("markup", markup_data) if markup_data is not None else ("mask", mask_data)
    image = inspect_upload(image_data, image_param, limits)
    guide = None if guide_data is None else inspect_upload(guide_data, guide_param, limits)
    if guide is not None:  # compared at the sizes sent, before either is scaled to what the job needs
        _check_same_size(guide_param, viewed_size(image), viewed_size(guide))
    image = decode_upload(image, image_param, limits, fit)
    guide = None if guide is None else decode_upload(guide, guide_param, limits, fit)
    if markup_data is not None:
        assert guide is not None
        return flatten_to_rgb(image), markup_repaint(guide)
    return flatten_to_rgb(image), repaint_mask(image, guide)


def repaint_mask(image: Image.Image, mask: Image.Image | None) -> Image.Image:
    """Where to repaint, mode "L" 255/0, from the mask's alpha 0 pixels (or the image's)."""
    if mask is not None:
        _check_same_size("mask", image.size, mask.size)
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


def markup_repaint(markup: Image.Image) -> Image.Image:
    """Where to repaint, from a markup layer: every pixel drawn on it (alpha > 0). Its colours are not read."""
    alpha = alpha_band(markup)
    if alpha is None or alpha.point([255] + [0] * 255).getbbox() is None:
        raise invalid("markup", "The markup must be a transparent PNG with marks drawn on it: it has no clear pixel.")
    repaint = alpha.point([0] + [255] * 255)
    if repaint.getbbox() is None:
        raise invalid("markup", "The markup is fully transparent: nothing is drawn on it, so nothing would be edited.")
    return repaint


def _check_same_size(param: str, image_size: tuple[int, int], guide_size: tuple[int, int]) -> None:
    if guide_size != image_size:
        raise invalid(
            param,
            f"The {param} is {guide_size[0]}x{guide_size[1]} but the image is {image_size[0]}x{image_size[1]}; "
            "they must have the same dimensions.",
        )
