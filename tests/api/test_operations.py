"""Running Easel for people and browsers: CORS preflights, the /v1 hint, access log lines, SSE keep-alive."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from server.serving.streaming import KEEPALIVE, with_keepalive

from ..conftest import FAST, SLOW, TEST_KEY, TINY, LiveServer, assert_envelope, running_server, tiny_settings

ORIGIN = "http://app.example"
GENERATIONS = "/v1/images/generations"
PROMPT = "a blue square in the centre"


@pytest.fixture(scope="module")
def browser_server(tiny_model_dirs):
    settings = tiny_settings(
        tiny_model_dirs, cors_allow_origins=(ORIGIN,), api_keys=(TEST_KEY,), sse_keepalive_seconds=0.1
    )
    with running_server(settings) as live:
        yield live


def preflight(live: LiveServer, origin: str = ORIGIN) -> httpx.Response:
    """What a browser sends before a cross-origin POST with the SDK's headers."""
    headers = {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type, x-stainless-os, openai-organization",
    }
    return httpx.options(live.url + GENERATIONS, headers=headers, timeout=10)


def test_preflight_is_answered_without_a_key(browser_server: LiveServer):
    response = preflight(browser_server)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert all(name in allowed for name in ("authorization", "content-type", "x-stainless-os"))
    assert response.headers["access-control-max-age"] == "600"


def test_cross_origin_answers_carry_cors_headers_errors_too(browser_server: LiveServer):
    body = {"prompt": PROMPT, "size": "64x64", **FAST}
    headers = {"origin": ORIGIN, "authorization": f"Bearer {TEST_KEY}"}
    response = httpx.post(browser_server.url + GENERATIONS, json=body, headers=headers, timeout=60)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in response.headers["access-control-expose-headers"]
    refused = httpx.post(browser_server.url + GENERATIONS, json=body, headers={"origin": ORIGIN}, timeout=10)
    assert_envelope(refused, 401, code="invalid_api_key")
    assert refused.headers["access-control-allow-origin"] == ORIGIN  # the page can read why


def test_other_origins_get_no_cors(browser_server: LiveServer):
    error = assert_envelope(preflight(browser_server, "http://evil.example"), 400, code="cors")
    assert error["message"].startswith("CORS preflight refused")
    response = httpx.get(browser_server.url + "/health", headers={"origin": "http://evil.example"}, timeout=10)
    assert "access-control-allow-origin" not in response.headers


def test_without_cors_options_is_a_405(api_server: LiveServer):
    response = preflight(api_server)
    assert_envelope(response, 405)
    assert "access-control-allow-origin" not in response.headers


def test_a_path_without_v1_says_to_add_it(api_server: LiveServer):
    error = assert_envelope(httpx.post(api_server.url + "/images/generations", json={}, timeout=10), 404)
    assert "did you mean /v1/images/generations?" in error["message"]
    client = openai.OpenAI(base_url=api_server.url, api_key="x", max_retries=0)  # base_url without /v1
    with pytest.raises(openai.NotFoundError, match="base_url to end in /v1"):
        client.images.generate(prompt=PROMPT)
    assert assert_envelope(httpx.get(api_server.url + "/v1/nothing", timeout=10), 404)["message"] == (
        "Invalid URL (GET /v1/nothing)"
    )


def test_access_lines_name_request_model_status_and_error(client: openai.OpenAI, caplog):
    caplog.set_level(logging.INFO, logger="easel.access")
    raw = client.images.with_raw_response.generate(prompt=PROMPT, model="gpt-image-2", size="64x64", extra_body=FAST)
    request_id = raw.headers["x-request-id"]
    with pytest.raises(openai.BadRequestError):
        client.images.generate(prompt=PROMPT, model=TINY, n=11)
    deadline = time.monotonic() + 5  # the line is written once the response has gone out
    while len([r for r in caplog.records if r.name == "easel.access"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    ok, refused = [r for r in caplog.records if r.name == "easel.access"][-2:]
    assert (ok.request_id, ok.method, ok.path, ok.status, ok.model) == (
        request_id,
        "POST",
        GENERATIONS,
        200,
        "gpt-image-2",
    )
    assert ok.duration_ms > 0 and ok.error is None
    assert ok.getMessage().startswith(f"POST {GENERATIONS} 200 ") and f"request_id={request_id}" in ok.getMessage()
    assert (refused.status, refused.model) == (400, None)  # refused before a model was resolved
    assert refused.error == "Invalid 'n': 11 is out of range; expected 1 to 10."
    assert refused.getMessage().endswith("error=\"Invalid 'n': 11 is out of range; expected 1 to 10.\"")


LOGGING_SCRIPT = """
import logging, warnings, sys
from server.observe.logs import configure_logging
configure_logging("info", sys.argv[1])
import tqdm
for _ in tqdm.tqdm(range(3)):
    pass
warnings.warn_explicit("old API", FutureWarning, "x.py", 1, module="transformers.models.x")
logging.getLogger("uvicorn.error").info("Started server process")
logging.getLogger("easel.access").info("POST /v1/x 400", extra={"request_id": "req_1", "status": 400, "error": "bad"})
"""


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_one_format_for_everyone_and_no_library_noise(log_format: str):
    result = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT, log_format], capture_output=True, text=True, timeout=60, check=True
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr  # no progress bar, no FutureWarning
    if log_format == "text":
        assert lines[0].endswith(" INFO uvicorn.error: Started server process")
        assert lines[1].endswith(" INFO easel.access: POST /v1/x 400")
    else:
        started, access = (json.loads(line) for line in lines)
        assert (started["logger"], started["level"], started["message"]) == (
            "uvicorn.error",
            "INFO",
            "Started server process",
        )
        assert (access["request_id"], access["status"], access["error"]) == ("req_1", 400, "bad")


async def _slow_events() -> AsyncIterator[bytes]:
    await asyncio.sleep(0.35)
    yield b"event: one\n\n"
    yield b"event: two\n\n"


def test_keepalive_fills_only_the_silence():
    async def collect(idle: float) -> list[bytes]:
        return [event async for event in with_keepalive(_slow_events(), idle)]

    events = asyncio.run(collect(0.1))
    assert events[-2:] == [b"event: one\n\n", b"event: two\n\n"]
    assert 2 <= events.count(KEEPALIVE) <= 4 and set(events[:-2]) == {KEEPALIVE}
    assert asyncio.run(collect(0)) == [b"event: one\n\n", b"event: two\n\n"]


def test_keepalive_comments_arrive_during_a_slow_stream(browser_server: LiveServer):
    body = {"prompt": PROMPT, "size": "64x64", "stream": True, **SLOW}
    headers = {"authorization": f"Bearer {TEST_KEY}"}
    with httpx.stream("POST", browser_server.url + GENERATIONS, json=body, headers=headers, timeout=120) as response:
        lines = [line for line in response.iter_lines() if line]
    completed = lines.index("event: image_generation.completed")
    assert ": keep-alive" in lines[:completed]
    client = openai.OpenAI(base_url=browser_server.api_url, api_key=TEST_KEY, max_retries=0)
    stream = client.images.generate(prompt=PROMPT, size="64x64", stream=True, extra_body={**FAST, "decoder_steps": 40})
    assert [event.type for event in stream] == ["image_generation.completed"]  # the SDK skips comments


REPO = Path(__file__).resolve().parents[2]


def test_the_readme_examples_run_against_a_fresh_server(api_server: LiveServer, tmp_path: Path):
    env = {**os.environ, "EASEL_BASE_URL": api_server.api_url}
    out = tmp_path / "star.png"
    command = [sys.executable, str(REPO / "examples/generate.py"), "a small yellow star in the top left corner"]
    result = subprocess.run(
        [*command, "--size", "320x192", "--seed", "7", "--out", str(out)], env=env, capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == f"{out} 320x192 seed=7"
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    subprocess.run(["bash", str(REPO / "examples/curl.sh")], env=env, cwd=tmp_path, timeout=300, check=True)
    assert (tmp_path / "easel-b64.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "easel-url.png").read_bytes().startswith(b"\x89PNG")
