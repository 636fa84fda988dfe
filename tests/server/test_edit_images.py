"""Decoding an edit's several images: the first at the size the answer needs, references small, errors by number."""

from __future__ import annotations

import pytest
from PIL import Image

from server.http.errors import APIError
from server.serving.decoding import UploadLimits
from server.serving.masks import REFERENCE_SIDE, decode_edit_images
from tests.hostile_files import encode, zeros_png

LIMITS = UploadLimits()


def fixed(width: int, height: int):
    return lambda _width, _height: (width, height)


def test_references_are_decoded_small_and_the_first_image_at_the_answers_size() -> None:
    big = encode(Image.new("RGB", (3000, 2000), (10, 200, 30)), "JPEG")
    wide = encode(Image.new("RGBA", (1600, 400), (200, 10, 30, 255)))
    images, repaint = decode_edit_images([big, big, wide], "image", None, LIMITS, fixed(768, 512))
    assert repaint is None  # opaque and no mask: the whole image is edited
    assert [image.size for image in images] == [(768, 512), (REFERENCE_SIDE, 341), (REFERENCE_SIDE, 128)]
    assert all(image.mode == "RGB" for image in images)


def test_a_mask_applies_to_the_first_image() -> None:
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 32, 32))
    photo = encode(Image.new("RGB", (64, 64)))
    other = encode(Image.new("RGB", (20, 30)))  # another size: references need not match the mask
    images, repaint = decode_edit_images([photo, other], "image", encode(mask), LIMITS)
    assert repaint is not None and repaint.size == (64, 64) and len(images) == 2


@pytest.mark.parametrize("which", [0, 2])
def test_an_unreadable_image_is_named_by_its_number(which: int) -> None:
    data = [encode(Image.new("RGB", (32, 32)))] * 3
    data[which] = zeros_png(7000, 6000)  # over the decoded-memory cap
    with pytest.raises(APIError) as info:
        decode_edit_images(data, "images", None, LIMITS)
    assert info.value.param == "images"
    assert info.value.message.startswith(f"Image {which + 1} of 3: The 'images' image is 7000x6000")
