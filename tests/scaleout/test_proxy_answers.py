"""The proxy middleware's answers, for what Ray's HTTP proxy sends (or fails to send) by itself; no Ray instance.

The apps here send exactly the ASGI messages Ray's proxy does (``ray.serve._private.http_util``): a plain-text
answer of its own, or nothing at all when the ingress replica holding the request dies. The same middleware in
front of a real Serve proxy, with a killed ingress replica: ``test_ingress_envelope.py``.
"""

from __future__ import annotations

import asyncio
import json

from ray.serve._private.http_util import convert_object_to_asgi_messages
from starlette.types import Message, Receive, Scope, Send

from server.scaleout.proxy import one_request_id


def answer_of(app, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict[str, str], bytes]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/models", "headers": headers or []}
    asyncio.run(one_request_id(app)(scope, receive, send))
    start, *bodies = sent
    assert start["type"] == "http.response.start"
    names = [name.decode() for name, _ in start["headers"]]
    assert len(names) == len(set(names)), names  # every header once
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, b"".join(b["body"] for b in bodies)


def ray_answers(message: str, status: int, extra: list[tuple[bytes, bytes]] | None = None):
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for part in convert_object_to_asgi_messages(message, status_code=status, extra_headers=extra):
            await send(part)

    return app


async def dies_without_answering(scope: Scope, receive: Receive, send: Send) -> None:
    return None  # Serve's proxy after a RayActorError: a 500 it does not send


def test_an_unanswered_request_is_a_500_envelope_with_the_request_id() -> None:
    status, headers, body = answer_of(dies_without_answering, [(b"x-request-id", b"req-ingress-gone")])
    assert status == 500
    assert headers["content-type"] == "application/json" and headers["x-request-id"] == "req-ingress-gone"
    assert json.loads(body) == {
        "error": {
            "message": "The server had an error while processing your request. "
            "Quote request id req-ingress-gone when reporting it.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def test_rays_own_plain_text_answers_become_envelopes_keeping_retry_after() -> None:
    app = ray_answers("Request req_1 timed out after 30s.", 408)
    status, headers, body = answer_of(app)
    assert status == 408 and headers["x-request-id"].startswith("req_")
    assert json.loads(body)["error"] == {
        "message": "Request req_1 timed out after 30s.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_timeout",
    }
    status, headers, body = answer_of(ray_answers("No replica available.", 503, [(b"retry-after", b"2")]))
    assert (status, headers["retry-after"], json.loads(body)["error"]["code"]) == (503, "2", "service_unavailable")
    status, _, body = answer_of(ray_answers("Traceback (most recent call last): ...", 500))
    assert status == 500 and "Traceback" not in body.decode()


def test_easels_own_answers_pass_unchanged() -> None:
    error = {"error": {"message": "x", "type": "invalid_request_error", "param": "n", "code": None}}
    for content, status in ((error, 400), ("# HELP metrics\n", 200)):
        status_seen, headers, body = answer_of(ray_answers(content, status))  # type: ignore[arg-type]
        assert status_seen == status
        assert body == (json.dumps(error, separators=(",", ":")).encode() if status == 400 else b"# HELP metrics\n")
