"""Connection limits: header and body deadlines, the connection cap, keep-alive, and clean early answers.

The server here has 1-second header and body deadlines, a 1-second keep-alive
and room for 8 connections. What each input is answered is also a row of the
hostile-input table (``test_hostile_inputs.py``); these tests check timing,
recovery and logs.
"""

from __future__ import annotations

import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from server.settings.model_specs import ModelSpec

from ..conftest import LOOPBACK_TLS, TINY, LiveServer, running_server, tiny_settings
from ..raw_http import connect, exchange, read_answer, request_head

DEADLINE = 1.0
MAX_CONNECTIONS = 8


@pytest.fixture(scope="module")
def guarded_server(tiny_model_dirs: dict[str, Path]):
    settings = tiny_settings(
        tiny_model_dirs,
        models=(ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"]),),
        aliases={},
        header_timeout_seconds=DEADLINE,
        body_timeout_seconds=DEADLINE,
        keep_alive_seconds=DEADLINE,
        max_connections=MAX_CONNECTIONS,
    )
    with running_server(settings) as live:
        yield live


def assert_raw_envelope(answer, status: int, code: str) -> dict:
    assert answer.status == status, answer
    assert answer.error is None, answer  # the answer arrived whole: no connection reset
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    assert answer.headers["x-request-id"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    return error


def test_headers_trickled_a_byte_at_a_time_still_meet_the_deadline(guarded_server: LiveServer):
    # Every byte arrives well within any per-read timeout; only a deadline for the whole head stops this.
    answer = exchange(guarded_server.url, b"GET /v1/models HTTP/1.1\r\n", trickle=b"x-slow: " + b"a" * 100)
    error = assert_raw_envelope(answer, 408, "request_timeout")
    assert error["message"] == "The request headers did not arrive within 1 seconds."
    assert DEADLINE - 0.1 <= answer.seconds < DEADLINE + 2


def test_a_body_short_of_its_content_length_is_a_408_with_the_request_id(guarded_server: LiveServer, caplog):
    head = request_head(
        "POST",
        "/v1/images/generations",
        {"content-type": "application/json", "content-length": "100", "x-request-id": "slow-body-1"},
    )
    # The level holds until the lines are read: the access line (INFO) is written once the app has seen the
    # request end, which may be after the answer arrived; with the level back at WARNING it would be dropped.
    with caplog.at_level(logging.INFO, logger="easel"):
        answer = exchange(guarded_server.url, head + b'{"prompt": "a"', trickle=b"      ")
        error = assert_raw_envelope(answer, 408, "request_timeout")
        assert error["message"] == "The request body did not arrive within 1 seconds."
        assert answer.headers["x-request-id"] == "slow-body-1"
        deadline = time.monotonic() + 30
        while not any("slow-body-1" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the 408 was never logged"
            time.sleep(0.05)
        time.sleep(0.3)  # anything else it would log comes now
    lines = [r for r in caplog.records if "slow-body-1" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in lines] == [("INFO", None)], [r.getMessage() for r in lines]
    assert " 408 " in lines[0].getMessage() and "did not arrive within 1 seconds" in lines[0].getMessage()


def test_a_connection_that_never_sends_is_closed_silently(guarded_server: LiveServer):
    with connect(guarded_server.url) as sock:
        answer = read_answer(sock, time.monotonic())
    assert answer.status is None and answer.body == b""
    assert DEADLINE - 0.1 <= answer.seconds < DEADLINE + 2


def test_kept_alive_connections_close_after_the_keep_alive_timeout(guarded_server: LiveServer):
    with connect(guarded_server.url) as sock:
        started = time.monotonic()
        sock.sendall(request_head("GET", "/health"))
        answer = read_answer(sock, started)  # the answer, then the idle connection closes
    assert answer.status == 200 and answer.json() == {"status": "ok"}
    assert DEADLINE - 0.1 <= answer.seconds < DEADLINE + 2


def test_over_the_connection_limit_is_a_503_and_the_server_recovers(guarded_server: LiveServer):
    held = [connect(guarded_server.url) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        extra = exchange(guarded_server.url, request_head("GET", "/health"))
        error = assert_raw_envelope(extra, 503, "server_busy")
        assert extra.headers["retry-after"] == "1"
        assert error["type"] == "server_error"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while httpx.get(guarded_server.url + "/health", verify=LOOPBACK_TLS).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_many_trickling_connections_all_end_by_the_deadline_and_health_stays_fast(guarded_server: LiveServer):
    count = 30  # more than the cap: the first 8 wait for their deadline, the rest are refused at once
    with ThreadPoolExecutor(count) as pool:
        slow = [
            pool.submit(exchange, guarded_server.url, b"POST /v1/images/generations HTTP/1.1\r\n", trickle=b"x" * 80)
        ]
        slow += [pool.submit(exchange, guarded_server.url, b"GET /health HTTP/1.1\r\n", trickle=b"y" * 80)]
        slow += [
            pool.submit(exchange, guarded_server.url, b"GE", trickle=b"T / HTTP/1.1\r\n") for _ in range(count - 2)
        ]
        answers = [future.result() for future in slow]
    statuses = sorted(answer.status for answer in answers)
    assert set(statuses) <= {408, 503}, statuses
    assert statuses.count(408) <= MAX_CONNECTIONS
    assert max(answer.seconds for answer in answers) < DEADLINE + 3
    started = time.monotonic()
    assert httpx.get(guarded_server.url + "/health").status_code == 200
    assert time.monotonic() - started < 1.0


def test_headers_over_the_size_limit_get_a_431_not_a_connection_reset(guarded_server: LiveServer):
    head = request_head("GET", "/v1/models", {"authorization": "Bearer " + "a" * 1_000_000})
    error = assert_raw_envelope(exchange(guarded_server.url, head), 431, "headers_too_large")
    assert error["message"] == "The request's headers are larger than this server's limit of 16384 bytes."


def test_a_request_uvicorn_cannot_parse_gets_the_envelope_with_a_request_id(guarded_server: LiveServer):
    answer = exchange(guarded_server.url, b"HELLO THERE\r\n\r\n")
    error = assert_raw_envelope(answer, 400, "invalid_http_request")
    assert error == {
        "message": "Invalid HTTP request: the request line or headers could not be parsed.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_http_request",
    }


def test_a_client_that_leaves_mid_upload_is_one_info_line_without_a_traceback(guarded_server: LiveServer, caplog):
    part = b'--XX\r\ncontent-disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG' + bytes(5000)
    head = request_head(
        "POST",
        "/v1/images/variations",
        {"content-type": "multipart/form-data; boundary=XX", "content-length": "100000", "x-request-id": "gone-1"},
    )
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", int(guarded_server.url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(head + part)
            time.sleep(0.3)
        deadline = time.monotonic() + 5
        while not any("gone-1" in record.getMessage() for record in caplog.records):
            assert time.monotonic() < deadline, "the disconnect was never logged"
            time.sleep(0.05)
        time.sleep(0.3)  # anything else it would log comes now
    ours = [record for record in caplog.records if "gone-1" in record.getMessage()]
    assert [(record.levelname, record.exc_info) for record in ours] == [("INFO", None)]
    assert ours[0].getMessage().startswith("POST /v1/images/variations 499 ")  # the access line says why
    assert ours[0].getMessage().endswith('request_id=gone-1 error="the client went away while sending its request"')
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_each_server_has_its_own_limits_and_refusal_log(tiny_model_dirs: dict[str, Path]):
    # Two servers in one process (the tests run several) must not share a count of refused connections.
    from server.app.runner import uvicorn_options
    from server.http.connections import ConnectionLimits, RefusalLog
    from server.http.guard import GuardedH11Protocol

    first = uvicorn_options(tiny_settings(tiny_model_dirs, max_connections=1))["http"]
    second = uvicorn_options(tiny_settings(tiny_model_dirs, max_connections=2))["http"]
    assert first.func is second.func is GuardedH11Protocol
    assert (first.keywords["limits"].max_connections, second.keywords["limits"].max_connections) == (1, 2)
    assert isinstance(first.keywords["refusals"], RefusalLog)
    assert first.keywords["refusals"] is not second.keywords["refusals"]
    shared = [
        name for name, value in vars(GuardedH11Protocol).items() if isinstance(value, (RefusalLog, ConnectionLimits))
    ]
    assert shared == []
