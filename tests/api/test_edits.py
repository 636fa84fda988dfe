"""POST /v1/images/edits through the openai SDK (multipart) and raw httpx (JSON, bad uploads)."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import struct
import zlib

import httpx
import numpy as np
import openai
import pytest
from PIL import Image, ImageDraw

from tests.conftest import FAST, KARLO, assert_envelope

WIDTH, HEIGHT = 96, 64  # not square on purpose
HOLE = (24, 16, 64, 48)  # left, top, right, bottom of the area to repaint


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def picture() -> Image.Image:
    """A smooth picture with an object, like a photo rather than noise."""
    x = np.linspace(0, 1, WIDTH)[None, :, None]
    y = np.linspace(0, 1, HEIGHT)[:, None, None]
    pixels = np.concatenate([40 + 180 * x + 0 * y, 60 + 150 * y + 0 * x, 200 - 120 * x * y], axis=2)
    image = Image.fromarray(pixels.astype(np.uint8))
    ImageDraw.Draw(image).ellipse((8, 8, 40, 40), fill=(210, 30, 40))
    return image


def mask_png(size: tuple[int, int] = (WIDTH, HEIGHT), hole: tuple[int, int, int, int] = HOLE) -> bytes:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), hole)
    return encode(mask)


def kept_area() -> np.ndarray:
    keep = np.ones((HEIGHT, WIDTH), dtype=bool)
    left, top, right, bottom = HOLE
    keep[top:bottom, left:right] = False
    return keep


def decoded(b64_json: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64_json)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


PICTURE_PNG = encode(picture())
MASK_PNG = mask_png()


def test_edit_keeps_every_unmasked_pixel_and_repaints_the_mask(client: openai.OpenAI) -> None:
    result = client.images.edit(
        image=("photo.png", PICTURE_PNG, "image/png"),
        mask=("mask.png", MASK_PNG, "image/png"),
        prompt="a blue square",
        n=2,
        response_format="b64_json",
        extra_body={"seed": 5, **FAST},
    )
    assert [item.seed for item in result.data] == [5, 6]
    original = np.asarray(picture())
    keep = kept_area()
    for item in result.data:
        image = decoded(item.b64_json)
        assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)  # size auto: the input's own
        pixels = np.asarray(image.convert("RGB"))
        assert psnr(pixels[keep], original[keep]) == math.inf  # bit-exact outside the mask
        assert np.abs(pixels[~keep].astype(int) - original[~keep]).mean() > 5  # repainted inside


def test_gpt_image_name_answers_jpeg_with_usage(client: openai.OpenAI) -> None:
    result = client.images.edit(
        image=("photo.png", PICTURE_PNG, "image/png"),
        mask=("mask.png", MASK_PNG, "image/png"),
        prompt="a blue square",
        model="gpt-image-1",
        output_format="jpeg",
        output_compression=95,
        size=f"{WIDTH}x{HEIGHT}",
        extra_body=FAST,
    )
    image = decoded(result.data[0].b64_json)
    assert image.format == "JPEG" and image.size == (WIDTH, HEIGHT)
    # JPEG's own loss (chroma subsampling) caps this near the ~31 dB of the original re-encoded alike.
    keep = kept_area()
    assert psnr(np.asarray(image.convert("RGB"))[keep], np.asarray(picture())[keep]) >= 28
    assert result.size == f"{WIDTH}x{HEIGHT}" and result.output_format == "jpeg"
    usage = result.usage
    assert usage.input_tokens_details.image_tokens > 0 and usage.input_tokens_details.text_tokens == 3
    assert usage.output_tokens == usage.input_tokens_details.image_tokens  # n=1: one image in, one out
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_a_list_of_one_image_goes_as_image_array_and_works(client: openai.OpenAI) -> None:
    result = client.images.edit(
        image=[("photo.png", PICTURE_PNG, "image/png")],
        mask=("mask.png", MASK_PNG, "image/png"),
        prompt="a blue square",
        response_format="b64_json",
        extra_body=FAST,
    )
    assert decoded(result.data[0].b64_json).size == (WIDTH, HEIGHT)


def test_more_than_sixteen_images_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(
            image=[(f"{i}.png", PICTURE_PNG, "image/png") for i in range(17)],
            prompt="a blue square",
            extra_body=FAST,
        )
    assert info.value.param == "image"
    assert info.value.body["message"] == "An edit takes at most 16 images, but 17 were sent."


def test_without_a_mask_the_images_transparent_pixels_are_repainted(client: openai.OpenAI) -> None:
    rgba = picture().convert("RGBA")
    rgba.paste((0, 0, 0, 0), HOLE)
    result = client.images.edit(
        image=("photo.png", encode(rgba), "image/png"),
        prompt="a blue square",
        response_format="b64_json",
        extra_body=FAST,
    )
    pixels = np.asarray(decoded(result.data[0].b64_json).convert("RGB"))
    keep = kept_area()
    np.testing.assert_array_equal(pixels[keep], np.asarray(picture())[keep])


def test_explicit_size_resizes_the_result(client: openai.OpenAI) -> None:
    result = client.images.edit(
        image=("photo.png", PICTURE_PNG, "image/png"),
        mask=("mask.png", MASK_PNG, "image/png"),
        prompt="a blue square",
        size="256x256",
        response_format="b64_json",
        extra_body=FAST,
    )
    assert decoded(result.data[0].b64_json).size == (256, 256)


def test_async_client_edit(async_client: openai.AsyncOpenAI) -> None:
    async def edit() -> openai.types.ImagesResponse:
        async with async_client:
            return await async_client.images.edit(
                image=("photo.webp", encode(picture(), "WEBP", lossless=True), "image/webp"),
                mask=("mask.png", MASK_PNG, "image/png"),
                prompt="a blue square",
                response_format="b64_json",
                extra_body=FAST,
            )

    result = asyncio.run(edit())
    pixels = np.asarray(decoded(result.data[0].b64_json).convert("RGB"))
    keep = kept_area()
    np.testing.assert_array_equal(pixels[keep], np.asarray(picture())[keep])


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def post_json(api_server, body: dict) -> httpx.Response:
    return httpx.post(api_server.api_url + "/images/edits", json=body, timeout=60)


def test_json_body_with_data_urls(api_server) -> None:
    response = post_json(
        api_server,
        {
            "images": [{"image_url": data_url(PICTURE_PNG)}],
            "mask": {"image_url": data_url(MASK_PNG)},
            "prompt": "a blue square",
            "response_format": "b64_json",
            "n": 1,
            **FAST,
        },
    )
    assert response.status_code == 200, response.text
    pixels = np.asarray(decoded(response.json()["data"][0]["b64_json"]).convert("RGB"))
    keep = kept_area()
    np.testing.assert_array_equal(pixels[keep], np.asarray(picture())[keep])


@pytest.mark.parametrize(
    "images, mask, param, message",
    [
        (
            [{"image_url": "https://example.com/a.png"}],
            None,
            "images",
            "'images' is a remote URL; Easel does not fetch",
        ),
        ([{"file_id": "file-abc"}], None, "images", "'images' names file 'file-abc', which does not exist."),
        ([{"image_url": data_url(PICTURE_PNG)}] * 17, None, "images", "An edit takes at most 16 images, but 17"),
        ({"image_url": data_url(PICTURE_PNG)}, None, "images", "'images' must be an array"),
        (None, None, "images", "Missing required parameter: 'images'."),
        ([{"image_url": data_url(PICTURE_PNG)}], {"file_id": "file-m"}, "mask", "'mask' names file 'file-m', which"),
    ],
)
def test_json_body_refusals(api_server, images, mask, param: str, message: str) -> None:
    body = {"prompt": "a blue square", **FAST}
    if images is not None:
        body["images"] = images
    if mask is not None:
        body["mask"] = mask
    error = assert_envelope(post_json(api_server, body), 400, param=param)
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(message)


def multipart(fields: dict[str, str], files: list) -> tuple[bytes, str]:
    """A multipart/form-data body built by hand, so it can have no file part at all."""
    boundary = "easel-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    for name, (filename, content, content_type) in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_multipart(api_server, files: list, data: dict | None = None) -> httpx.Response:
    fields = {"prompt": "a blue square", **{k: str(v) for k, v in FAST.items()}, **(data or {})}
    body, content_type = multipart(fields, files)
    return httpx.post(
        api_server.api_url + "/images/edits", content=body, headers={"content-type": content_type}, timeout=60
    )


def test_karlo_cannot_edit_a_masked_area(api_server) -> None:
    response = post_multipart(
        api_server,
        [("image", ("a.png", PICTURE_PNG, "image/png")), ("mask", ("m.png", MASK_PNG, "image/png"))],
        {"model": KARLO},
    )
    error = assert_envelope(response, 400, param="mask", code="unsupported_value")
    assert error["message"].startswith("Model 'karlo-tiny' repaints the whole image only")


@pytest.mark.parametrize(
    "data, files, param, message",
    [
        ({"input_fidelity": "exact"}, None, "input_fidelity", "Invalid value: 'exact'. Supported values are:"),
        ({"fidelity": "high"}, None, "fidelity", "Unrecognized request argument supplied: fidelity"),
        ({"prompt": ""}, None, "prompt", "Missing required parameter: 'prompt'."),
        ({}, [], "image", "Missing required parameter: 'image'."),
        (
            {"image": "not a file"},
            [],
            "image",
            "'image' must be a file upload (a multipart file part), not a text field.",
        ),
        (
            {"stream": "true", "response_format": "url"},
            None,
            "response_format",
            "Streamed images are always sent as b64_json",
        ),
        ({"size": "32x32"}, None, "size", "Invalid size '32x32': width and height must each be between 64 and 2048"),
    ],
)
def test_field_refusals(api_server, data: dict, files, param: str, message: str) -> None:
    if files is None:
        files = [("image", ("a.png", PICTURE_PNG, "image/png")), ("mask", ("m.png", MASK_PNG, "image/png"))]
    error = assert_envelope(post_multipart(api_server, files, data), 400, param=param)
    assert error["message"].startswith(message)


def test_other_content_types_are_refused(api_server) -> None:
    response = httpx.post(
        api_server.api_url + "/images/edits", content=b"prompt=x", headers={"content-type": "text/plain"}
    )
    error = assert_envelope(response, 400, param=None, code="unsupported_content_type")
    assert error["message"].startswith("Send an edit as multipart/form-data")


def test_the_sdk_raises_bad_request_with_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(
            image=("photo.png", PICTURE_PNG, "image/png"),
            mask=("mask.png", mask_png((64, 64)), "image/png"),
            prompt="a blue square",
            extra_body=FAST,
        )
    assert info.value.status_code == 400
    assert info.value.param == "mask"
    assert info.value.type == "invalid_request_error"
