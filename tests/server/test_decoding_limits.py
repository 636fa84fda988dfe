"""Decoding costs what the image is worth: lying headers, the decoded-memory cap, decoding at the size the job
needs, and the cap on decodes at once."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from PIL import Image

from server.http.errors import APIError
from server.serving.decoding import UploadLimits, decode_variation_input, decoded_bytes, inspect_upload, open_upload
from server.serving.masks import decode_edit_inputs
from server.settings.config import Settings
from server.settings.loading import load_settings
from server.settings.model_specs import ModelSpec
from tests.hostile_files import encode, lying_jpeg, lying_png, lying_webp, zeros_png

LIMITS = UploadLimits()
MIB = 1024 * 1024


def refused(call, *args) -> APIError:
    with pytest.raises(APIError) as info:
        call(*args)
    assert info.value.status == 400
    return info.value


def fixed(width: int, height: int):
    return lambda _w, _h: (width, height)


def test_a_jpeg_whose_header_claims_more_than_its_data_holds_is_refused() -> None:
    data = lying_jpeg(6000, 6000)
    assert len(data) < 1000
    error = refused(open_upload, data, "image", LIMITS)
    assert error.param == "image"
    assert error.message == (
        f"The 'image' JPEG file is truncated or corrupt: its header says 6000x6000, more than its {len(data)} bytes "
        "can hold."
    )


def test_a_real_jpeg_of_one_colour_passes_the_data_check() -> None:
    # As compressible as a JPEG gets, and still far above a bit per 8x8 block.
    data = encode(Image.new("L", (4096, 4096), 10), "JPEG", quality=10, optimize=True, progressive=True)
    assert open_upload(data, "image", LIMITS, fixed(512, 512)).size == (512, 512)


@pytest.mark.parametrize("lying, name, side", [(lying_png, "PNG", 3000), (lying_webp, "WebP", 2000)])
def test_a_png_or_webp_claiming_more_than_it_holds_is_refused(lying, name: str, side: int) -> None:
    # Sizes under the decoded-memory cap, so the decoder itself finds the lie (Pillow and libwebp check the data).
    error = refused(open_upload, lying(side, side), "mask", LIMITS)
    assert error.param == "mask"
    assert error.message.startswith(f"The 'mask' {name} file is truncated or corrupt:")


def test_decoded_memory_over_the_limit_is_refused_before_decoding() -> None:
    data = zeros_png(6300, 6300)  # 39.7 megapixels, under the pixel limit, 115 KB
    started = time.perf_counter()
    error = refused(open_upload, data, "image", LIMITS)
    assert time.perf_counter() - started < 0.5  # refused from the header: nothing was decoded
    assert error.param == "image"
    assert error.message == (
        "The 'image' image is 6300x6300 (RGB); decoding it would take 151.4 MiB, over this server's limit of "
        "48.0 MiB. Send it smaller, or as a JPEG."
    )


def test_the_cap_is_memory_not_pixels() -> None:
    # The same 39.7 megapixels in greyscale take a byte each: under the cap, decoded, then shrunk to what is needed.
    image = open_upload(zeros_png(6300, 6300, "L"), "image", LIMITS, fixed(1024, 1024))
    assert image.size == (1024, 1024)
    limits = UploadLimits(max_decoded_bytes=6300 * 6300 - 1)
    assert "decoding it would take" in refused(open_upload, zeros_png(6300, 6300, "L"), "image", limits).message


def test_webp_counts_the_copy_its_decoder_keeps() -> None:
    image = inspect_upload(encode(Image.new("RGB", (100, 50)), "WEBP"), "image", LIMITS)
    assert decoded_bytes(image) == 100 * 50 * 4 * 2


def test_a_large_jpeg_is_decoded_at_a_dct_scale_that_covers_the_job() -> None:
    data = encode(Image.new("RGB", (6000, 6000), (90, 140, 200)), "JPEG", quality=80)
    # In full it would take 137 MiB, over the cap; at 1/8 scale (750x750) it is cheap.
    assert "decoding it would take" in refused(open_upload, data, "image", LIMITS).message
    image = open_upload(data, "image", LIMITS, fixed(512, 512))
    assert image.size == (512, 512)
    assert image.getpixel((256, 256)) == pytest.approx((90, 140, 200), abs=3)


def test_an_image_no_larger_than_needed_is_decoded_as_it_is() -> None:
    data = encode(Image.new("RGB", (300, 200), (1, 2, 3)))
    assert open_upload(data, "image", LIMITS, fixed(1024, 1024)).size == (300, 200)


def test_shrinking_keeps_the_aspect_ratio_and_covers_the_size_asked_for() -> None:
    data = encode(Image.new("RGB", (3000, 1000), (1, 2, 3)))
    assert decode_variation_input(data, LIMITS, fixed(512, 512)).size == (1536, 512)


def test_exif_orientation_is_applied_before_fitting() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 4000x2000, viewed 2000x4000
    data = encode(Image.new("RGB", (4000, 2000), (50, 60, 70)), "JPEG", exif=exif.tobytes())
    assert open_upload(data, "image", LIMITS, fixed(500, 1000)).size == (500, 1000)


def test_a_colour_key_survives_shrinking() -> None:
    pixels = np.zeros((2000, 2000, 3), dtype=np.uint8)
    pixels[:1000] = (10, 20, 30)  # the top half is the transparent colour
    pixels[1000:] = (200, 100, 50)
    data = encode(Image.fromarray(pixels), transparency=(10, 20, 30))
    image, repaint = decode_edit_inputs(data, "image", None, LIMITS, fixed(500, 500))
    assert image.size == repaint.size == (500, 500)
    assert repaint.getpixel((250, 100)) == 255 and repaint.getpixel((250, 400)) == 0


def test_image_and_mask_of_different_formats_shrink_to_the_same_size() -> None:
    size = (3001, 2001)  # odd sides: a JPEG's DCT scale rounds them up, the PNG's resize does not
    photo = encode(Image.new("RGB", size, (120, 130, 140)), "JPEG")
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 1500, 1000))
    image, repaint = decode_edit_inputs(photo, "image", encode(mask), LIMITS, fixed(1024, 683))
    assert image.size == repaint.size == (1024, 683)
    assert repaint.getpixel((100, 100)) == 255 and repaint.getpixel((900, 600)) == 0


def test_mask_size_is_compared_as_sent_not_as_shrunk() -> None:
    photo = encode(Image.new("RGB", (3000, 2000)), "JPEG")
    mask = encode(Image.new("RGBA", (3000, 1999)))
    error = refused(decode_edit_inputs, photo, "image", mask, LIMITS, fixed(1024, 683))
    assert error.param == "mask"
    assert error.message == "The mask is 3000x1999 but the image is 3000x2000; they must have the same dimensions."


def test_at_most_the_configured_number_of_uploads_decode_at_once(tmp_path) -> None:
    from server.app.application import create_app

    model = ModelSpec(name="m", family="kandinsky22", path=tmp_path)
    settings = Settings(models=(model,), image_dir=tmp_path, max_concurrent_decodes=2)
    serving = create_app(settings).state.easel.images
    lock = threading.Lock()
    running, most = 0, 0

    def decode(_: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    async def decode_many() -> None:
        await asyncio.gather(*(serving._decode(decode, i) for i in range(8)))

    asyncio.run(decode_many())
    assert most == 2


def test_decoding_and_connection_limits_come_from_the_command_line() -> None:
    argv = ["--model", "m=kandinsky22:/nowhere", "--max-decode-mb", "16", "--max-concurrent-decodes", "3"]
    argv += ["--max-connections", "9", "--header-timeout-seconds", "2.5", "--body-timeout-seconds", "30"]
    argv += ["--keep-alive-seconds", "7"]
    settings = load_settings(argv, env={})
    assert UploadLimits.from_settings(settings).max_decoded_bytes == 16 * MIB
    assert (settings.max_concurrent_decodes, settings.max_connections) == (3, 9)
    assert (settings.header_timeout_seconds, settings.body_timeout_seconds, settings.keep_alive_seconds) == (2.5, 30, 7)
    env = {"EASEL_MAX_CONNECTIONS": "5", "EASEL_MAX_DECODE_MB": "8"}
    from_env = load_settings(["--model", "m=kandinsky22:/nowhere"], env=env)
    assert (from_env.max_connections, from_env.max_decode_bytes) == (5, 8 * MIB)
    defaults = load_settings(["--model", "m=kandinsky22:/nowhere"], env={})
    assert (defaults.max_decode_bytes, defaults.max_concurrent_decodes, defaults.max_connections) == (48 * MIB, 2, 128)
    assert (defaults.header_timeout_seconds, defaults.body_timeout_seconds, defaults.keep_alive_seconds) == (10, 60, 5)
