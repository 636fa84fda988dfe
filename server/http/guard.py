"""The connection guard: what uvicorn's h11 protocol does not limit.

uvicorn's h11 protocol with the limits a server facing slow or hostile clients needs (docs/running.md, "Connection
limits"): a cap on open connections, deadlines for a request's headers and body and for sending its answer
(:mod:`server.http.send_deadline`), and OpenAI error envelopes for
what is refused before the app sees a request. Its limits and early answers are in :mod:`server.http.connections`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .connections import LINGER_SECONDS, ConnectionLimits, RefusalLog, raw_error
from .request_id import new_request_id
from .send_deadline import SendWatch

log = logging.getLogger("easel.connections")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a connection cap, header and body deadlines, and enveloped early answers.

    A request's headers must be complete within ``header_timeout`` of its first
    byte (for a new connection: of the connection), its body within
    ``body_timeout`` of the headers; otherwise the answer is 408 (an idle new
    connection that sent nothing is just closed). A connection over
    ``max_connections`` is answered 503 at once. Every early answer is
    followed by a lingering close: the server stops writing and drops what the
    client still sends for up to ``LINGER_SECONDS``, so the client reads the
    answer instead of a connection reset.
    """

    def __init__(self, *args: Any, limits: ConnectionLimits, refusals: RefusalLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.refusals = refusals  # one server's, shared by its connections
        self._deadline: asyncio.TimerHandle | None = None
        self._reading: str | None = None  # "headers" or "body": the part on a deadline
        self._lingering = False
        self._send_watch: SendWatch | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over_limit = len(self.connections) >= self.limits.max_connections
        super().connection_made(transport)
        self._send_watch = SendWatch(self.loop, transport, self.limits.send_timeout, self._send_stalled)
        if over_limit:
            self.refusals.note()
            message = "The server has too many open connections; retry shortly."
            self._answer_early(raw_error(503, message, "server_busy", new_request_id(), {"retry-after": "1"}))
            return
        self._expect("headers")

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._reading is None:  # the first bytes of the next request on a kept-alive connection
            self._expect("headers")
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request()  # a pipelined request may have started

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        if self._send_watch is not None:
            self._send_watch.stop()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 could not parse the request: answer in the envelope rather than uvicorn's plain text."""
        limit = self.config.h11_max_incomplete_event_size or self.limits.header_bytes
        if len(self.conn.trailing_data[0]) > limit:
            message = f"The request's headers are larger than this server's limit of {limit} bytes."
            self._answer_early(raw_error(431, message, "headers_too_large", new_request_id()))
        else:
            message = "Invalid HTTP request: the request line or headers could not be parsed."
            self._answer_early(raw_error(400, message, "invalid_http_request", new_request_id()))

    def _follow_request(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._reading != "body":
                self._expect("body")
        elif state is h11.IDLE:
            if self._reading is None and self.conn.trailing_data[0]:
                self._expect("headers")
        else:  # the request is complete (or the connection is over): nothing left to wait for
            self._stop_deadline()

    def _expect(self, part: str) -> None:
        self._stop_deadline()
        self._reading = part
        timeout = self.limits.header_timeout if part == "headers" else self.limits.body_timeout
        self._deadline = self.loop.call_later(timeout, self._too_slow)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._reading = None, None

    def _too_slow(self) -> None:
        part = self._reading
        self._deadline, self._reading = None, None
        if self.transport.is_closing():
            return
        if part == "headers" and not self.conn.trailing_data[0]:
            self.transport.close()  # a connection opened and never used: nothing to answer
            return
        cycle = self.cycle if part == "body" else None
        if cycle is not None and cycle.response_started:
            self.transport.close()  # already answered (or answering): the client only gets less
            return
        request_id = new_request_id()
        timeout = self.limits.header_timeout if part == "headers" else self.limits.body_timeout
        message = f"The request {part} did not arrive within {timeout:g} seconds."
        if cycle is not None:
            # The app sees this deadline as a disconnect; its access line reports the 408 (AccessLogMiddleware).
            state = cycle.scope.setdefault("state", {})
            request_id = state.get("request_id", request_id)
            state["timed_out"] = message
            cycle.disconnected = True
            cycle.message_event.set()
        else:  # headers: the app never saw the request, so no access line will say it
            log.info("request %s not received within %g s; answered 408 [request_id=%s]", part, timeout, request_id)
        self._answer_early(raw_error(408, message, "request_timeout", request_id))

    def _send_stalled(self) -> None:
        """The client took none of its answer for ``send_timeout``: drop the connection, unsent bytes and all."""
        timeout = self.limits.send_timeout
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # the app is still answering: its access line says it
            state = cycle.scope.setdefault("state", {})
            state["gone"] = f"while receiving its answer: none of it was taken for {timeout:g} seconds"
        else:
            request_id = cycle.scope.get("state", {}).get("request_id", "-") if cycle is not None else "-"
            log.info("answer not taken by the client for %g s; connection aborted [request_id=%s]", timeout, request_id)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # a reset, not a close: the kernel would otherwise keep trying to deliver what it holds
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()  # close() would wait for the unsent bytes to leave, which they never will

    def _answer_early(self, answer: bytes) -> None:
        self._stop_deadline()
        self._lingering = True
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
