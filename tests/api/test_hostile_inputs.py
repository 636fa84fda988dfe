"""The hostile-input suite: one table, input -> status, param, code; after every row the server is still healthy.

Keep it growing: every input found to hurt the server (issue 18's audit, and
what comes after) gets a row here, next to the malformed classes the other
tests cover (their tables are folded in). Rows run in order against one
server; after each, ``/health`` answers, and at the end a generation still
works and nothing was logged at ERROR.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from server.settings.model_specs import ModelSpec

from ..conftest import FAST, KARLO, TINY, LiveServer, running_server, tiny_settings
from ..hostile_files import lying_jpeg, lying_png, lying_webp, zeros_png
from ..raw_http import RawAnswer, connect, exchange, request_head
from .test_edit_uploads import BAD_UPLOADS
from .test_edits import MASK_PNG, PICTURE_PNG, multipart, png_header_only
from .test_errors import BAD_FIELDS

MAX_CONNECTIONS = 16
BODY_LIMIT = 4 * 1024 * 1024
FOREIGN = ("thesis.docx", "old-notes.txt")  # the audit's files: a user's own, one of them days old
SYMLINK = "A" * 43 + ".png"  # a name the image store could have made, pointing outside it


@dataclass(frozen=True)
class Row:
    input: str
    send: Callable[[LiveServer], RawAnswer]
    status: int | None  # None: the client goes away, nothing is answered
    param: str | None = None
    code: str | None = None


def _answer(response: httpx.Response) -> RawAnswer:
    return RawAnswer(response.status_code, dict(response.headers), response.content)


def generation(body: dict | bytes) -> Callable[[LiveServer], RawAnswer]:
    content = body if isinstance(body, bytes) else json.dumps({"prompt": "a red circle", **FAST, **body}).encode()
    headers = {"content-type": "application/json"}
    return lambda live: _answer(
        httpx.post(live.url + "/v1/images/generations", content=content, headers=headers, timeout=60)
    )


def upload(path: str, files: list, fields: dict | None = None) -> Callable[[LiveServer], RawAnswer]:
    values = {"prompt": "a blue square", **{k: str(v) for k, v in FAST.items()}, **(fields or {})}
    if path == "variations":  # no prompt, no prior
        values = {k: v for k, v in values.items() if k not in ("prompt", "prior_steps")}
    body, content_type = multipart(values, files)
    headers = {"content-type": content_type}
    return lambda live: _answer(httpx.post(f"{live.url}/v1/images/{path}", content=body, headers=headers, timeout=60))


def image_part(data: bytes, name: str = "image") -> tuple:
    return (name, ("upload.png", data, "image/png"))


def vary(image: bytes) -> Callable[[LiveServer], RawAnswer]:
    return upload("variations", [image_part(image)])


def edit(image: bytes, mask: bytes | None = None, **fields) -> Callable[[LiveServer], RawAnswer]:
    files = [image_part(image, "image[]")] + ([image_part(mask, "mask")] if mask is not None else [])
    return upload("edits", files, fields)


def post(path: str, content: bytes, content_type: str) -> Callable[[LiveServer], RawAnswer]:
    headers = {"content-type": content_type}
    return lambda live: _answer(httpx.post(live.url + path, content=content, headers=headers, timeout=30))


def json_edit(body: dict) -> Callable[[LiveServer], RawAnswer]:
    return lambda live: _answer(httpx.post(live.url + "/v1/images/edits", json={"prompt": "x", **body}, timeout=60))


def data_url(data: bytes) -> dict:
    return {"image_url": "data:image/jpeg;base64," + base64.b64encode(data).decode()}


def raw(data: bytes, trickle: bytes = b"") -> Callable[[LiveServer], RawAnswer]:
    return lambda live: exchange(live.url, data, trickle=trickle)


def get(path: str, headers: dict | None = None) -> Callable[[LiveServer], RawAnswer]:
    return lambda live: _answer(httpx.get(live.url + path, headers=headers, timeout=30))


def over_the_connection_limit(live: LiveServer) -> RawAnswer:
    held = [connect(live.url) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        return exchange(live.url, request_head("GET", "/health"))
    finally:
        for sock in held:
            sock.close()
        time.sleep(0.2)


def cut_off_mid_upload(live: LiveServer) -> RawAnswer:
    part = b'--XX\r\ncontent-disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + PICTURE_PNG[:500]
    head = request_head(
        "POST", "/v1/images/edits", {"content-type": "multipart/form-data; boundary=XX", "content-length": "90000"}
    )
    with socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(head + part)
        time.sleep(0.2)
    time.sleep(0.3)
    return RawAnswer(None)


def never_reads_a_big_answer(live: LiveServer) -> RawAnswer:
    """Ask for a 12 MB image with a 4 KiB receive window and read nothing: the send deadline resets it."""
    name = live.state.store.save(os.urandom(12 * 1024 * 1024), "png")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
    with sock:
        sock.sendall(request_head("GET", f"/v1/files/images/{name}"))
        deadline = time.monotonic() + 30
        while sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != TCP_CLOSE:  # tcpi_state: reset yet?
            assert time.monotonic() < deadline, "the server never gave up on the connection"
            time.sleep(0.1)
        with pytest.raises(ConnectionResetError):
            while sock.recv(1 << 20):
                pass
    return RawAnswer(None)


def image_url_headers(live: LiveServer) -> RawAnswer:
    made = httpx.post(live.url + "/v1/images/generations", json={"prompt": "x", "size": "256x256", **FAST}, timeout=60)
    return _answer(httpx.get(made.json()["data"][0]["url"], timeout=30))


SLOW_BODY = request_head(
    "POST", "/v1/images/generations", {"content-type": "application/json", "content-length": "100"}
)
HUGE_AUTH = request_head("GET", "/v1/models", {"authorization": "Bearer " + "a" * 1_000_000})
GENERATION = json.dumps({"prompt": "a red circle", **FAST}).encode()  # valid JSON, sent as another media type
SSRF = {"images": [{"image_url": "http://169.254.169.254/x.png"}]}
TIMEOUT = "request_timeout"
TCP_CLOSE = 7  # Linux's tcpi_state once a connection is reset
AUDIT_GIFS = {"n": 10, "size": "2048x2048", "output_format": "gif", "frame_count": 16, "response_format": "b64_json"}

ROWS = [
    # 1. The image store owns only its files (fixed in 758b568; sweeps: tests/server/test_storage.py).
    Row("GET a user's own file in --image-dir", get("/v1/files/images/thesis.docx"), 404, code="image_not_found"),
    Row("GET a symlink named like an image", get(f"/v1/files/images/{SYMLINK}"), 404, code="image_not_found"),
    # 2. Decoding costs what the image is worth.
    Row("variation: 633-byte JPEG claiming 6000x6000", vary(lying_jpeg()), 400, "image"),
    Row("variation: 39.7-megapixel PNG of zeros", vary(zeros_png()), 400, "image"),
    Row("variation: 16x16 PNG claiming 3000x3000", vary(lying_png(3000, 3000)), 400, "image"),
    Row("variation: 16x16 WebP claiming 2000x2000", vary(lying_webp(2000, 2000)), 400, "image"),
    Row("variation: PNG header claiming 48 MP, no data", vary(png_header_only(8000, 6000)), 400, "image"),
    Row("variation: PNG header claiming 2.5 GP", vary(png_header_only(50000, 50000)), 400, "image"),
    Row("edit: mask is a JPEG claiming 6000x6000", edit(PICTURE_PNG, lying_jpeg()), 400, "mask"),
    Row(
        "JSON edit: data URL of a JPEG claiming 6000x6000",
        json_edit({"images": [data_url(lying_jpeg())]}),
        400,
        "images",
    ),
    # 3. Connection limits (timing and recovery: test_connections.py).
    Row("headers trickled past the deadline", raw(b"GET /health HTTP/1.1\r\n", trickle=b"x" * 40), 408, code=TIMEOUT),
    Row("Content-Length 100, 20 bytes sent", raw(SLOW_BODY + b"{" * 20), 408, code=TIMEOUT),
    Row(f"connection number {MAX_CONNECTIONS + 1}", over_the_connection_limit, 503, code="server_busy"),
    Row("a 12 MB answer its client never reads (reset after the send deadline)", never_reads_a_big_answer, None),
    # 3b. Memory per request (test_request_memory.py).
    Row("ten 16-frame 2048x2048 GIFs as b64_json", generation(AUDIT_GIFS), 400, "n", "answer_too_large"),
    # 4. A client that goes away is not an error (no answer; checked: nothing logged at ERROR).
    Row("multipart edit cut off mid-body", cut_off_mid_upload, None),
    # 6. Smaller items.
    Row("unparseable request line", raw(b"HELLO THERE\r\n\r\n"), 400, code="invalid_http_request"),
    Row("1 MB Authorization header", raw(HUGE_AUTH), 431, code="headers_too_large"),
    Row("NUL in prompt", generation({"prompt": "a red\x00circle"}), 400, "prompt", "invalid_value"),
    Row("ESC in negative_prompt", generation({"negative_prompt": "\x1b[31m"}), 400, "negative_prompt", "invalid_value"),
    Row("C1 control in an edit's prompt", edit(PICTURE_PNG, MASK_PNG, prompt="a\x85b"), 400, "prompt"),
    Row("GET an image URL (nosniff)", image_url_headers, 200),
    # Malformed classes, and the bodies other tests already send.
    Row("body not JSON", generation(b"{not json"), 400, code="invalid_json"),
    Row("JSON nested 100,000 deep", generation(b"[" * 100_000 + b"]" * 100_000), 400, code="invalid_json"),
    Row("lone surrogate in JSON", generation(b'{"prompt": "a\\ud800"}'), 400, code="invalid_json"),
    Row("5,000-digit integer", generation(b'{"prompt": "x", "n": ' + b"9" * 5000 + b"}"), 400),
    Row(f"body over {BODY_LIMIT} bytes", generation({"prompt": "p" * (BODY_LIMIT + 1)}), 413, code="request_too_large"),
    Row("edit as text/plain", post("/v1/images/edits", b"x", "text/plain"), 400, code="unsupported_content_type"),
    *(
        Row(
            f"generation as {kind} (no CORS preflight)",
            post("/v1/images/generations", GENERATION, kind),
            415,
            code="unsupported_content_type",
        )
        for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "")
    ),
    Row("foreign Host (DNS rebinding)", get("/v1/models", {"host": "evil.example"}), 421, code="misdirected_request"),
    Row("foreign Host with the server's port", get("/health", {"host": "rebind.example:8000"}), 421),
    Row("JSON edit with an http URL", json_edit(SSRF), 400, "images"),
    Row("JSON edit with a file_id", json_edit({"images": [{"file_id": "file-1"}]}), 400, "images"),
    Row("edit with 17 images", upload("edits", [image_part(PICTURE_PNG, "image[]")] * 17), 400, "image"),
    Row("unknown model", generation({"model": "dall-e-9"}), 404, "model", "model_not_found"),
    Row("a key given twice", generation(b'{"prompt": "x", "n": 1, "n": 10}'), 400, "n", "duplicate_parameter"),
    Row("3 MB unknown field name", generation({"x" * 3_000_000: 1}), 400, "x" * 256 + "…[2999744 more characters]"),
    Row("unknown route", get("/v1/nope"), 404),
    Row("wrong method", post("/v1/models", b"", "application/json"), 405),
    *(Row(f"generation field {fields}", generation(fields), 400, param) for fields, param in BAD_FIELDS),
    *(
        Row(f"edit upload: {name}", edit(image, mask), 400, param)
        for name, (image, mask, param, _) in BAD_UPLOADS.items()
    ),
]


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def errors_logged():
    handler = _Errors()
    logging.getLogger().addHandler(handler)
    yield handler.records
    logging.getLogger().removeHandler(handler)


@pytest.fixture(scope="module")
def hostile_server(tiny_model_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, errors_logged):
    image_dir = tmp_path_factory.mktemp("image-dir")
    for name in FOREIGN:
        (image_dir / name).write_text("mine")
    two_days_ago = time.time() - 2 * 86400
    os.utime(image_dir / FOREIGN[1], (two_days_ago, two_days_ago))
    (image_dir / SYMLINK).symlink_to(image_dir / FOREIGN[0])
    settings = tiny_settings(
        tiny_model_dirs,
        models=(
            ModelSpec(name=TINY, family="kandinsky22", path=tiny_model_dirs["kandinsky"]),
            ModelSpec(name=KARLO, family="karlo", path=tiny_model_dirs["karlo"]),
        ),
        image_dir=image_dir,
        url_ttl_seconds=1.0,  # sweeps run while the rows do
        max_body_bytes=BODY_LIMIT,
        max_connections=MAX_CONNECTIONS,
        header_timeout_seconds=1.0,
        body_timeout_seconds=1.0,
        send_timeout_seconds=1.0,
    )
    with running_server(settings) as live:
        yield live


@pytest.mark.parametrize("row", ROWS, ids=[f"{i:02d}" for i in range(len(ROWS))])
def test_hostile_input(hostile_server: LiveServer, row: Row):
    answer = row.send(hostile_server)
    assert answer.status == row.status, (row.input, answer)
    if row.status is not None:
        assert answer.headers["x-request-id"], row.input
        assert answer.headers["x-content-type-options"] == "nosniff", row.input
    if row.status is not None and row.status >= 400:
        assert answer.headers["content-type"] == "application/json", row.input
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, row.input
        assert error["param"] == row.param, (row.input, error)
        if row.code is not None:
            assert error["code"] == row.code, (row.input, error)
    assert httpx.get(hostile_server.url + "/health", timeout=10).json() == {"status": "ok"}, row.input


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.mark.parametrize(
    "send",
    [
        generation({"model": "m" * 3_000_000}),
        generation({"size": "s" * 3_000_000}),
        get("/v1/" + "p" * 10_000),
    ],
    ids=["model", "enum value", "path"],
)
def test_what_a_client_sent_is_repeated_at_most_256_characters(hostile_server: LiveServer, send):
    handler, easel = _Lines(), logging.getLogger("easel")
    level = easel.level
    easel.setLevel(logging.INFO)  # the access line of a 4xx is logged at INFO
    easel.addHandler(handler)
    try:
        answer = send(hostile_server)
        deadline = time.monotonic() + 30
        while not any(" ms model=" in line for line in handler.lines):  # logged once the answer is sent
            assert time.monotonic() < deadline, "no access log line"
            time.sleep(0.05)
    finally:
        easel.removeHandler(handler)
        easel.setLevel(level)
    assert answer.status in (400, 404)
    message = answer.json()["error"]["message"]
    assert "more characters]" in message and len(answer.body) < 1500, message[:300]
    assert max(len(line) for line in handler.lines) < 2500


def test_after_the_table_the_server_still_works_and_logged_no_error(hostile_server: LiveServer, errors_logged):
    body = {"prompt": "a red circle", "size": "256x256", "response_format": "b64_json", **FAST}
    assert httpx.post(hostile_server.url + "/v1/images/generations", json=body, timeout=60).status_code == 200
    image_dir = hostile_server.state.settings.image_dir
    assert image_dir is not None
    assert all((image_dir / name).read_text() == "mine" for name in FOREIGN)
    assert (image_dir / SYMLINK).is_symlink()
    assert [record.getMessage() for record in errors_logged] == []
