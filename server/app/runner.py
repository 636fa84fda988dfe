"""Running the app under uvicorn, with a shutdown that finishes the work it has taken on.

On SIGTERM, SIGINT or SIGHUP the server keeps listening but refuses new image requests
(503 with Retry-After), finishes its queued and running jobs for up to
``--shutdown-timeout`` seconds, cancels what is left with an error its clients
can read, then stops; a second signal cuts the wait short. It exits 0: the
shutdown was the one asked for (uvicorn would re-raise the signal and exit 143).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import uvicorn

from patches.h11 import incomplete_event_limit
from patches.uvicorn import check_h11_protocol

from ..http.connections import ConnectionLimits, RefusalLog
from ..http.guard import GuardedH11Protocol
from ..routes.state import ServerState
from ..serving.models import LoadFailed
from ..settings.config import Settings
from .application import create_app, drain

log = logging.getLogger("easel.runner")
# Once the jobs are done or cancelled, the answers still in flight get this long to be sent.
SEND_GRACE_SECONDS = 10.0


class EaselServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self.state = state
        self._draining: asyncio.Task[None] | None = None
        self._hurry: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's SIGINT and SIGTERM handling, plus SIGHUP: a closed terminal or a start without ``nohup``
        sends it, and its default action kills the process on the spot, losing the answers in flight."""
        hangup = getattr(signal, "SIGHUP", None)  # POSIX only
        if hangup is None or threading.current_thread() is not threading.main_thread():
            with super().capture_signals():
                yield
            return
        previous = signal.signal(hangup, self.handle_exit)
        try:
            with super().capture_signals():
                yield
        finally:
            signal.signal(hangup, previous)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the signal handler, on the event loop's thread between two of its steps: hand over to the loop.
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # before the loop runs: nothing to finish yet
            super().handle_exit(sig, frame)
            return
        loop.call_soon_threadsafe(self._on_signal)

    def _on_signal(self) -> None:
        if self._draining is None:
            self._hurry = asyncio.Event()
            self._draining = asyncio.ensure_future(self._drain_then_exit(self._hurry))
        else:
            assert self._hurry is not None
            log.warning("second signal: cancelling the remaining jobs now")
            self._hurry.set()

    async def _drain_then_exit(self, hurry: asyncio.Event) -> None:
        try:
            await drain(self.state, hurry=hurry)
        finally:
            self.should_exit = True  # uvicorn stops listening, waits for the last answers, runs the lifespan's end


def build_server(settings: Settings, *, on_load_failure: LoadFailed | None = None) -> EaselServer:
    """The server for ``settings``; ``run()`` serves until a signal ends it, gracefully."""
    app = create_app(settings, on_load_failure=on_load_failure)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # server.observe.logs has set up one format for Easel and uvicorn
        access_log=False,  # the access log is Easel's own, with request ids and models
        timeout_graceful_shutdown=int(SEND_GRACE_SECONDS),
        **uvicorn_options(settings),  # connection limits and deadlines
    )
    return EaselServer(config, app.state.easel)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that apply ``settings``' connection limits.

    Each call is one server's: its connections share its limits and its refusal log, and no other server's.
    """
    check_h11_protocol()
    limits = ConnectionLimits(
        settings.max_connections,
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
        header_bytes=incomplete_event_limit(None),
        send_timeout=settings.send_timeout_seconds,
    )
    protocol = functools.partial(GuardedH11Protocol, limits=limits, refusals=RefusalLog(limits.max_connections))
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_seconds}
