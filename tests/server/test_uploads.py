"""server/uploads.py: format sniffing, limits, corrupt files, masks, data URLs."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipelines.base import ModelInfo
from server.http.errors import APIError
from server.serving.decoding import UploadLimits, alpha_band, flatten_to_rgb, open_upload, sniff_format
from server.serving.masks import repaint_mask
from server.serving.uploads import data_url_bytes, image_ref_bytes

LIMITS = UploadLimits()


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int = 48, height: int = 32, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height and which holds no pixel data at all."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def refused(call, *args) -> APIError:
    with pytest.raises(APIError) as info:
        call(*args)
    assert info.value.status == 400
    assert info.value.type == "invalid_request_error"
    return info.value


@pytest.mark.parametrize("fmt, name", [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WEBP")])
def test_accepted_formats_decode_whatever_they_are_called(fmt: str, name: str) -> None:
    data = encode(noise(), fmt)
    assert sniff_format(data) == name
    image = open_upload(data, "image", LIMITS)
    assert image.size == (48, 32)
    assert flatten_to_rgb(image).mode == "RGB"


@pytest.mark.parametrize(
    "fmt, described",
    [("GIF", "a GIF file"), ("BMP", "a BMP file"), ("TIFF", "a TIFF file")],
)
def test_other_image_formats_are_refused_by_name(fmt: str, described: str) -> None:
    error = refused(open_upload, encode(noise(), fmt), "image", LIMITS)
    assert error.param == "image"
    assert error.message == f"The 'image' file is {described}; upload a PNG, JPEG or WebP image."


def test_text_and_empty_files_are_refused() -> None:
    error = refused(open_upload, b"hello, I am not an image", "mask", LIMITS)
    assert error.param == "mask"
    assert error.message == "The 'mask' file is not a recognised image; upload a PNG, JPEG or WebP image."
    assert refused(open_upload, b"", "image", LIMITS).message == "The 'image' file is empty."


def test_a_file_over_the_byte_limit_is_refused_before_decoding() -> None:
    data = encode(noise())
    error = refused(open_upload, data, "image", UploadLimits(max_bytes=len(data) - 1))
    assert error.message == f"The 'image' file is {len(data)} bytes; the limit is {len(data) - 1} bytes."
    assert open_upload(data, "image", UploadLimits(max_bytes=len(data))).size == (48, 32)


def test_a_header_claiming_more_pixels_than_the_limit_is_refused_without_decoding() -> None:
    bomb = png_header_only(8000, 6000)  # 48 MP claimed in 45 bytes; no pixel data to decode
    assert len(bomb) < 100
    error = refused(open_upload, bomb, "image", LIMITS)
    assert error.param == "image"
    assert error.message == "The 'image' image is 8000x6000 (48000000 pixels); the limit is 40000000 pixels."


def test_pillows_own_bomb_check_becomes_a_400() -> None:
    # 2.5 gigapixels: Pillow refuses it inside Image.open, before our own check runs.
    error = refused(open_upload, png_header_only(50_000, 50_000), "mask", LIMITS)
    assert error.param == "mask"
    assert error.message == "The 'mask' image has too many pixels to decode safely."


def test_truncated_png_is_refused() -> None:
    data = encode(noise())
    error = refused(open_upload, data[: len(data) // 2], "image", LIMITS)
    assert error.message == "The 'image' PNG file is truncated or corrupt: image file is truncated"


def test_jpeg_with_a_corrupt_header_is_refused() -> None:
    data = encode(noise(), "JPEG")
    corrupt = data[:20] + bytes(40) + data[60:]
    error = refused(open_upload, corrupt, "image", LIMITS)
    assert error.param == "image"
    assert error.message.startswith("The 'image' JPEG file is truncated or corrupt: ")


def test_png_signature_with_garbage_after_it_is_refused() -> None:
    error = refused(open_upload, b"\x89PNG\r\n\x1a\n" + bytes(64), "image", LIMITS)
    assert error.message == "The 'image' file starts like a PNG file but its header is invalid."


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(noise(48, 32), "JPEG", exif=exif)
    assert open_upload(data, "image", LIMITS).size == (32, 48)


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64).astype(np.uint16)
    image = open_upload(encode(Image.fromarray(ramp)), "image", LIMITS)
    rgb = np.asarray(flatten_to_rgb(image))
    assert rgb.shape == (32, 32, 3)
    np.testing.assert_array_equal(rgb[..., 0], (ramp >> 8).astype(np.uint8))


def test_sixteen_bit_greyscale_with_a_transparent_level_has_an_alpha_band() -> None:
    levels = np.full((8, 8), 40000, dtype=np.uint16)
    levels[2:5, 3:6] = 1234  # the PNG's tRNS grey level: these pixels are transparent
    image = open_upload(encode(Image.fromarray(levels), transparency=1234), "image", LIMITS)
    alpha = np.asarray(alpha_band(image))
    np.testing.assert_array_equal(alpha, np.where(levels == 1234, 0, 255))
    rgb = np.asarray(flatten_to_rgb(image))
    assert tuple(rgb[3, 4]) == (255, 255, 255) and tuple(rgb[0, 0]) == (156, 156, 156)  # over white; 40000 >> 8
    np.testing.assert_array_equal(np.asarray(repaint_mask(image, None)), np.where(levels == 1234, 255, 0))


def sixteen_bit_rgb_png(pixels: np.ndarray, transparent: tuple[int, int, int]) -> bytes:
    """A 16-bit RGB PNG with a tRNS colour key, written by hand: Pillow cannot write one."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
        + chunk(b"tRNS", struct.pack(">HHH", *transparent))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_sixteen_bit_rgb_with_a_transparent_colour_has_an_alpha_band() -> None:
    pixels = np.empty((6, 8, 3), dtype=np.uint16)
    pixels[:] = (0x1234, 0x5678, 0x9ABC)
    pixels[1:3, 2:5] = (0xFF00, 0x00FF, 0x8080)  # the tRNS colour: these pixels are transparent
    image = open_upload(sixteen_bit_rgb_png(pixels, (0xFF00, 0x00FF, 0x8080)), "image", LIMITS)
    key = np.all(pixels == (0xFF00, 0x00FF, 0x8080), axis=-1)
    np.testing.assert_array_equal(np.asarray(alpha_band(image)), np.where(key, 0, 255))
    rgb = np.asarray(flatten_to_rgb(image))
    assert tuple(rgb[1, 2]) == (255, 255, 255) and tuple(rgb[0, 0]) == (0x12, 0x56, 0x9A)
    np.testing.assert_array_equal(np.asarray(repaint_mask(image, None)), np.where(key, 255, 0))


def test_transparency_is_flattened_over_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (200, 10, 10, 255))
    rgba.putpixel((2, 2), (0, 0, 0, 128))
    rgb = np.asarray(flatten_to_rgb(open_upload(encode(rgba), "image", LIMITS)))
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[1, 1]) == (200, 10, 10)
    assert tuple(rgb[2, 2]) == (127, 127, 127)


def test_palette_png_with_a_transparent_index_has_an_alpha_band() -> None:
    palette = Image.new("P", (6, 6), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 0)
    image = open_upload(encode(palette, transparency=0), "image", LIMITS)
    alpha = np.asarray(alpha_band(image))
    assert alpha[0, 0] == 0 and alpha[1, 1] == 255
    assert alpha_band(open_upload(encode(noise()), "image", LIMITS)) is None


def mask_with_hole(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)
    return mask


def test_mask_alpha_zero_marks_the_repaint_area() -> None:
    image = noise(48, 32)
    mask = mask_with_hole((48, 32), (8, 4, 20, 16))
    mask.putpixel((30, 30), (0, 0, 0, 1))  # almost transparent is not "fully transparent"
    repaint = np.asarray(repaint_mask(image, mask))
    expected = np.zeros((32, 48), dtype=np.uint8)
    expected[4:16, 8:20] = 255
    np.testing.assert_array_equal(repaint, expected)


def test_without_a_mask_the_images_own_alpha_zero_is_used() -> None:
    image = noise(48, 32, "RGBA")
    image.putalpha(255)
    image.paste((0, 0, 0, 0), (0, 0, 10, 10))
    repaint = np.asarray(repaint_mask(image, None))
    assert repaint.dtype == np.uint8 and repaint.shape == (32, 48)
    assert set(np.unique(repaint)) == {0, 255}
    assert (repaint[:10, :10] == 255).all() and repaint.sum() == 255 * 100


def test_mask_size_must_match_the_image() -> None:
    error = refused(repaint_mask, noise(48, 32), mask_with_hole((32, 32), (0, 0, 4, 4)))
    assert error.param == "mask"
    assert error.message == "The mask is 32x32 but the image is 48x32; they must have the same dimensions."


def test_no_mask_and_no_alpha_edits_the_whole_image() -> None:
    assert repaint_mask(noise(), None) is None


def test_no_mask_and_an_opaque_alpha_channel_edits_the_whole_image() -> None:
    assert repaint_mask(Image.new("RGBA", (48, 32), (9, 9, 9, 255)), None) is None


def test_mask_without_alpha_channel_is_refused() -> None:
    error = refused(repaint_mask, noise(), Image.new("L", (48, 32), 255))
    assert error.param == "mask"
    assert error.message.startswith("The mask has no alpha channel")


def test_a_mask_without_any_transparent_pixel_would_edit_nothing() -> None:
    error = refused(repaint_mask, noise(), Image.new("RGBA", (48, 32), (9, 9, 9, 255)))
    assert error.param == "mask"
    assert error.message == "The mask has no fully transparent pixel (alpha 0): nothing would be edited."


def test_base64_data_urls_decode() -> None:
    data = encode(noise())
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    assert data_url_bytes(url, "images", LIMITS) == data
    assert image_ref_bytes({"image_url": url}, "mask", LIMITS) == data


@pytest.mark.parametrize(
    "url, message",
    [
        ("https://example.com/a.png", "'images' is a remote URL; Easel does not fetch remote images."),
        ("http://10.0.0.1/a.png", "'images' is a remote URL; Easel does not fetch remote images."),
        ("data:image/png,rawbytes", "'images' must be a base64 data URL (data:image/png;base64,...)."),
        ("ftp://host/a.png", "'images' must be a base64 data URL (data:image/png;base64,...)."),
        ("data:image/png;base64,@@@@", "'images' does not hold valid base64 data."),
    ],
)
def test_bad_image_urls_are_refused(url: str, message: str) -> None:
    error = refused(data_url_bytes, url, "images", LIMITS)
    assert error.param == "images"
    assert error.message.startswith(message)


def test_data_url_over_the_byte_limit_is_refused_before_decoding() -> None:
    url = "data:image/png;base64," + "A" * 4000
    error = refused(data_url_bytes, url, "images", UploadLimits(max_bytes=2000))
    assert error.message == "The 'images' image is larger than 2000 bytes."


@pytest.mark.parametrize(
    "ref, message",
    [
        ({"file_id": "file-abc"}, "'mask' uses file_id, but this server has no Files API"),
        ({"image_url": 3}, "'mask' must have a string 'image_url'."),
        ({"image_url": "data:,", "detail": "x"}, "'mask' has unknown field(s): detail."),
        ("data:image/png;base64,AAAA", "'mask' must be an object with an 'image_url'."),
    ],
)
def test_bad_image_references_are_refused(ref: object, message: str) -> None:
    error = refused(image_ref_bytes, ref, "mask", LIMITS)
    assert error.param == "mask"
    assert error.message.startswith(message)


def test_limits_come_from_the_command_line() -> None:
    from server.settings.loading import load_settings

    argv = ["--model", "m=kandinsky22:/nowhere", "--max-upload-mb", "2", "--max-upload-megapixels", "1.5"]
    limits = UploadLimits.from_settings(load_settings(argv, env={}))
    assert limits == UploadLimits(max_bytes=2 * 1024 * 1024, max_pixels=1_500_000)
    defaults = UploadLimits.from_settings(load_settings(["--model", "m=kandinsky22:/nowhere"], env={}))
    assert defaults == UploadLimits(max_bytes=50 * 1024 * 1024, max_pixels=40_000_000)


@pytest.mark.parametrize(
    "size, expected",
    [
        ((96, 64), (96, 64)),  # within bounds: unchanged
        ((4096, 3072), (2048, 1536)),  # too large: scaled down, aspect kept
        ((32, 48), (64, 96)),  # too small: scaled up, aspect kept
        ((5000, 40), (2048, 64)),  # fits no scale: each side clamped
    ],
)
def test_auto_output_size_follows_the_input(size: tuple[int, int], expected: tuple[int, int]) -> None:
    info = ModelInfo(
        name="m",
        family="kandinsky22",
        native_area=64 * 64,
        size_multiple=8,
        min_side=64,
        max_side=2048,
        fixed_native_size=None,
        tasks=frozenset(),
        presets={},
        parameter_counts={},
        device="cpu",
        dtype="float32",
    )
    assert info.size_for_input(*size) == expected
