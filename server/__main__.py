"""``python -m server`` / ``easel serve``: check the settings, then run the API server until it stops.

A configuration mistake is one line on stderr and exit status 2, before
anything listens (:mod:`server.config`, :mod:`server.preflight`). A model
that fails to load stops the server with exit status 1 unless
``--keep-going`` is set, in which case it answers 503 for that model only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence

import uvicorn

from .app import create_app
from .config import Settings, load_settings
from .options import ConfigError, fail
from .preflight import check_before_listening

log = logging.getLogger("easel")

LOAD_FAILURE_EXIT_CODE = 1


def easel_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("easel")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def configure_logging(settings: Settings) -> None:
    """The one place the serve path sets up logging."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def serve(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Serve until stopped; returns the exit status (a configuration mistake exits with 2 before that)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--version" in argv:
        print(f"easel {easel_version()}")
        return 0
    settings = load_settings(argv, env)
    try:
        check_before_listening(settings)
    except ConfigError as error:
        fail(error)
    configure_logging(settings)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        log.warning("listening on %s without API keys: anyone who can reach it can use it", settings.host)
    return _run(settings)


def _run(settings: Settings) -> int:
    failures: list[str] = []
    server: uvicorn.Server | None = None

    def stop_on_failure(name: str, message: str) -> None:
        failures.append(f"model {name!r} failed to load: {message}")
        if server is not None:
            server.should_exit = True  # polled by uvicorn's main loop; safe from the loading thread

    on_failure = None if settings.keep_going else stop_on_failure
    app = create_app(settings, on_load_failure=on_failure)
    server = uvicorn.Server(uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level))
    server.run()
    if failures:
        print(f"easel: error: {failures[0]} (start with --keep-going to serve the other models)", file=sys.stderr)
        return LOAD_FAILURE_EXIT_CODE
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    raise SystemExit(serve(argv))


if __name__ == "__main__":
    main()
