"""Memory per request: an answer that could take more than ``--max-request-mb`` is refused before its job runs.

The audit's request (ten 16-frame GIFs at 2048x2048 as base64) took a server
from 0.49 GB to 3.66 GB; now it is a 400 naming ``n``, and GIF frames are
encoded as they are fitted, one at a time, with the same bytes as before.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from server.protocol.images import MiB, answer_peak_bytes, check_answer_memory
from server.serving.answer_memory import MemoryReturn
from server.serving.files import fit_to_size
from server.serving.formats import encode_gif
from server.settings.model_specs import ModelSpec

from ..conftest import FAST, TINY, LiveServer, assert_envelope, running_server, tiny_settings

AUDIT = {"n": 10, "size": "2048x2048", "output_format": "gif", "frame_count": 16, "response_format": "b64_json"}
SMALL_LIMIT_MB = 16


@pytest.fixture(scope="module")
def small_limit(tiny_model_dirs: dict[str, Path]) -> Iterator[LiveServer]:
    settings = tiny_settings(
        tiny_model_dirs,
        models=(ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"]),),
        aliases={},
        max_request_bytes=SMALL_LIMIT_MB * MiB,
    )
    with running_server(settings) as live:
        yield live


def peak(n: int, frames: int, width: int, height: int, fmt: str, inline: bool) -> int:
    return answer_peak_bytes(n, frames, width * height, fmt, inline)


def refusal(shape: tuple, limit_mb: int) -> tuple[str | None, str]:
    with pytest.raises(Exception) as caught:
        check_answer_memory(*shape, limit=limit_mb * MiB)
    return caught.value.param, caught.value.message  # type: ignore[attr-defined]


def test_the_estimate_of_the_audits_request_and_of_common_ones() -> None:
    assert peak(10, 16, 2048, 2048, "gif", True) == 3672 * MiB
    assert peak(2, 16, 2048, 2048, "gif", True) == 856 * MiB  # the largest n that fits 1024
    assert peak(10, 16, 2048, 2048, "gif", False) == 1112 * MiB  # as URLs: no base64 copies
    assert peak(10, 1, 2048, 2048, "png", True) == 464 * MiB
    assert peak(1, 1, 1024, 1024, "png", False) == 9 * MiB


def test_a_refusal_names_what_to_lower_and_how_far() -> None:
    param, message = refusal((10, 16, 2048, 2048, "gif", True), 1024)
    assert param == "n"
    assert message == (
        "This request's answer could take up to 3,672 MiB of memory to encode and send (10 x 16 frame(s) at "
        "2048x2048, gif, base64 in JSON); this server allows 1,024 MiB per request (--max-request-mb). "
        "At most n=2 fits at this size and format."
    )
    assert refusal((1, 16, 2048, 2048, "gif", True), 200) == (
        "frame_count",
        "This request's answer could take up to 504 MiB of memory to encode and send (1 x 16 frame(s) at "
        "2048x2048, gif, base64 in JSON); this server allows 200 MiB per request (--max-request-mb). "
        "At most frame_count=5 fits with n=1 at this size.",
    )
    param, message = refusal((1, 1, 2048, 2048, "png", True), 16)
    assert param == "size" and message.endswith("Ask for a smaller size or response_format 'url'.")
    param, message = refusal((1, 1, 2048, 2048, "png", False), 16)
    assert param == "size" and message.endswith("Ask for a smaller size.")


def test_gif_frames_encoded_one_at_a_time_give_the_same_bytes() -> None:
    frames = [Image.effect_noise((64, 64), 40 + 10 * i).convert("RGB") for i in range(4)]
    fitted = [fit_to_size(frame, 300, 300) for frame in frames]
    held = io.BytesIO()  # every frame fitted and held first, as before
    first, *rest = (frame.convert("RGB") for frame in fitted)
    first.save(held, format="GIF", save_all=True, append_images=rest, duration=120, loop=0)
    assert encode_gif((fit_to_size(frame, 300, 300) for frame in frames), 120) == held.getvalue()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_memory_is_handed_back_with_glibcs_malloc_trim() -> None:
    trim = MemoryReturn().trim
    assert trim is not None and trim(0) in (0, 1)  # 1: memory was released, 0: there was none to release


def test_the_audits_request_is_a_400_naming_n_before_any_job_runs(api_server: LiveServer, client) -> None:
    before = api_server.model_stats(TINY)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(prompt="a red circle", model=TINY, extra_body={**AUDIT, **FAST})  # type: ignore[arg-type]
    error = caught.value.body
    assert caught.value.status_code == 400 and isinstance(error, dict)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "n", "answer_too_large")
    assert error["message"].endswith("At most n=2 fits at this size and format.")
    after = api_server.model_stats(TINY)
    assert (after["completed"], after["queued"], after["running"]) == (before["completed"], 0, 0)


def test_a_small_limit_refuses_streams_and_edits_and_admits_what_fits(small_limit: LiveServer) -> None:
    url = small_limit.api_url + "/images"
    gif = {"prompt": "a red circle", "size": "512x512", "output_format": "gif", "frame_count": 16, **FAST}
    error = assert_envelope(
        httpx.post(url + "/generations", json={**gif, "response_format": "b64_json"}, timeout=60),
        400,
        param="frame_count",
        code="answer_too_large",
    )
    assert error["message"].endswith("At most frame_count=7 fits with n=1 at this size.")
    as_gif = httpx.post(url + "/generations", json={**gif, "frame_count": 7, "response_format": "b64_json"}, timeout=60)
    assert as_gif.status_code == 200, as_gif.text
    streamed = {"prompt": "a red circle", "size": "512x512", "n": 10, "stream": True, **FAST}
    assert_envelope(httpx.post(url + "/generations", json=streamed, timeout=60), 400, param="n")
    png = Image.new("RGB", (64, 64), "red")
    buffer = io.BytesIO()
    png.save(buffer, format="PNG")
    files = {"image": ("in.png", buffer.getvalue(), "image/png")}
    data = {"prompt": "a blue square", "n": 10, "size": "512x512", "response_format": "b64_json", **FAST}
    edit = httpx.post(url + "/edits", files=files, data={k: str(v) for k, v in data.items()}, timeout=60)
    assert_envelope(edit, 400, param="n", code="answer_too_large")
    fits = httpx.post(url + "/generations", json={"prompt": "a red circle", "size": "256x256", **FAST}, timeout=60)
    assert fits.status_code == 200 and len(fits.json()["data"]) == 1
