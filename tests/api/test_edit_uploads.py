"""Broken, hostile and oversized edit uploads: each refused with an exact 400 naming the part."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from tests.api.test_edits import (
    HEIGHT,
    MASK_PNG,
    PICTURE_PNG,
    WIDTH,
    encode,
    mask_png,
    picture,
    png_header_only,
    post_multipart,
)
from tests.conftest import assert_envelope


def rgb_jpeg() -> bytes:
    return encode(picture(), "JPEG", quality=90)


BAD_UPLOADS = {
    "not an image": (
        b"just some text, no pixels",
        None,
        "image",
        "The 'image' file is not a recognised image; upload a PNG, JPEG or WebP image.",
    ),
    "gif": (
        encode(picture(), "GIF"),
        None,
        "image",
        "The 'image' file is a GIF file; upload a PNG, JPEG or WebP image.",
    ),
    "bmp": (
        encode(picture(), "BMP"),
        None,
        "image",
        "The 'image' file is a BMP file; upload a PNG, JPEG or WebP image.",
    ),
    "decompression bomb": (
        png_header_only(8000, 6000),
        None,
        "image",
        "The 'image' image is 8000x6000 (48000000 pixels); the limit is 40000000 pixels.",
    ),
    "mask size mismatch": (
        PICTURE_PNG,
        mask_png((64, 64), (0, 0, 8, 8)),
        "mask",
        "The mask is 64x64 but the image is 96x64; they must have the same dimensions.",
    ),
    "truncated png": (
        PICTURE_PNG[: len(PICTURE_PNG) // 2],
        MASK_PNG,
        "image",
        "The 'image' PNG file is truncated or corrupt: image file is truncated",
    ),
    "corrupt jpeg": (
        rgb_jpeg()[:20] + bytes(40) + rgb_jpeg()[60:],
        MASK_PNG,
        "image",
        "The 'image' JPEG file is truncated or corrupt: broken data stream when reading image file",
    ),
    "mask not an image": (
        PICTURE_PNG,
        b"GIF89a" + bytes(20),
        "mask",
        "The 'mask' file is a GIF file; upload a PNG, JPEG or WebP image.",
    ),
    "mask without alpha": (
        PICTURE_PNG,
        encode(Image.new("L", (WIDTH, HEIGHT), 0)),
        "mask",
        "The mask has no alpha channel: its fully transparent pixels (alpha 0) mark the area to edit.",
    ),
    "nothing to edit": (
        PICTURE_PNG,
        encode(Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 255))),
        "mask",
        "The mask has no fully transparent pixel (alpha 0): nothing would be edited.",
    ),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_an_exact_400(api_server, case: str) -> None:
    image, mask, param, message = BAD_UPLOADS[case]
    files = [("image[]", ("upload.png", image, "image/png"))]  # the declared type is ignored
    if mask is not None:
        files.append(("mask", ("mask.png", mask, "image/png")))
    error = assert_envelope(post_multipart(api_server, files), 400, param=param)
    assert error == {"message": message, "type": "invalid_request_error", "param": param, "code": None}


def test_oversized_file_is_a_400_naming_the_part(api_server, monkeypatch: pytest.MonkeyPatch) -> None:
    limit = len(MASK_PNG) + 10
    images = api_server.state.images
    monkeypatch.setattr(images, "upload_limits", replace(images.upload_limits, max_bytes=limit))
    files = [("image", ("a.png", PICTURE_PNG, "image/png")), ("mask", ("m.png", MASK_PNG, "image/png"))]
    error = assert_envelope(post_multipart(api_server, files), 400, param="image")
    assert error["message"] == f"The 'image' file is {len(PICTURE_PNG)} bytes; the limit is {limit} bytes."
