"""Edit inputs: the images, and where to repaint, from the mask's alpha (OpenAI's semantics), the image's own, or
a markup layer.

The fully transparent pixels (alpha 0) of ``mask`` mark the area to repaint;
the mask must have the image's dimensions. Without a mask, the image's own
fully transparent pixels mark it. A mask without an alpha channel, or with no
fully transparent pixel (nothing would be edited), is refused with param
``mask``. A ``markup`` layer marks the area by what is drawn on it (alpha > 0);
its colours are not read. With none of these (an opaque image and no mask),
there is no repaint area: the whole image is edited, image to image. The
backends get the repaint area as a mode "L" image, 255 = repaint.

The first image is the one edited; the others are references, used only for
their CLIP image embeddings, so they are decoded no larger than
:data:`REFERENCE_SIDE` (an image encoder sees at most 224 pixels a side).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from PIL import Image

from pipelines.inpaint import composite_unmasked

from ..http.errors import APIError, invalid
from .decoding import Fit, UploadLimits, alpha_band, decode_upload, flatten_to_rgb, inspect_upload, viewed_size
from .files import resize_exactly

REFERENCE_SIDE = 512  # reference images are decoded no larger than this a side


def decode_edit_images(
    images_data: Sequence[bytes],
    image_param: str,
    mask_data: bytes | None,
    limits: UploadLimits,
    fit: Fit | None = None,
    markup_data: bytes | None = None,
) -> tuple[list[Image.Image], Image.Image | None]:
    """Every input image, RGB (the edited one first), and the first one's repaint mask (see
    :func:`decode_edit_inputs`). CPU work: run in a thread."""
    count = len(images_data)
    with _naming(image_param, 1, count):
        image, repaint = decode_edit_inputs(images_data[0], image_param, mask_data, limits, fit, markup_data)
    references = [
        decode_reference(data, image_param, limits, number, count)
        for number, data in enumerate(images_data[1:], start=2)
    ]
    return [image, *references], repaint


def decode_edit_inputs(
    image_data: bytes,
    image_param: str,
    mask_data: bytes | None,
    limits: UploadLimits,
    fit: Fit | None = None,
    markup_data: bytes | None = None,
) -> tuple[Image.Image, Image.Image | None]:
    """The RGB image and the repaint mask (mode "L", 255 = repaint; None: the whole image). CPU work: run in a
    thread."""
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


def decode_reference(data: bytes, param: str, limits: UploadLimits, number: int, count: int) -> Image.Image:
    """A reference image, RGB, decoded no larger than :data:`REFERENCE_SIDE` a side."""
    with _naming(param, number, count):
        return flatten_to_rgb(decode_upload(inspect_upload(data, param, limits), param, limits, _reference_fit))


def _reference_fit(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, REFERENCE_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


@contextmanager
def _naming(param: str, number: int, count: int) -> Iterator[None]:
    """With several images, an error about one says which it is (1-based, in the order sent)."""
    try:
        yield
    except APIError as error:
        if count == 1 or error.param != param:  # a mask's or markup's error is about that part
            raise
        raise invalid(param, f"Image {number} of {count}: {error.message}", code=error.code) from None


def repaint_mask(image: Image.Image, mask: Image.Image | None) -> Image.Image | None:
    """Where to repaint, mode "L" 255/0, from the mask's alpha 0 pixels (or the image's); None: the whole image
    (no mask, and the image has no fully transparent pixel)."""
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
        return None
    repaint = alpha.point([255] + [0] * 255)
    if repaint.getbbox() is None:
        if mask is None:
            return None
        raise invalid("mask", "The mask has no fully transparent pixel (alpha 0): nothing would be edited.")
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


def edit_compositor(
    original: Image.Image, repaint: Image.Image, width: int, height: int
) -> Callable[[list[Image.Image]], list[Image.Image]]:
    """The input's own pixels outside the mask, at the requested size: unmasked pixels come back unchanged."""

    def composite(images: list[Image.Image]) -> list[Image.Image]:
        sized_original = resize_exactly(original, width, height)
        return [composite_unmasked(sized_original, image, repaint) for image in images]

    return composite
