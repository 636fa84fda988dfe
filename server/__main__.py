"""``python -m server`` / ``easel serve``: check the settings, then run the API server until it stops.

A configuration mistake is one line on stderr and exit status 2, before
anything listens (:mod:`server.settings.config`, :mod:`server.app.preflight`). A model
that fails to load stops the server with exit status 1 unless
``--keep-going`` is set, in which case it answers 503 for that model only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence

from .app.preflight import check_before_listening
from .app.runner import EaselServer, build_server
from .observe.logs import configure_logging
from .settings.config import Settings
from .settings.loading import load_settings
from .settings.options import ConfigError, fail

log = logging.getLogger("easel")

LOAD_FAILURE_EXIT_CODE = 1


def easel_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("easel")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


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
    configure_logging(settings.log_level, settings.log_format)  # the one place the serve path sets up logging
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        log.warning("listening on %s without API keys: anyone who can reach it can use it", settings.host)
    return _run(settings)


def _run(settings: Settings) -> int:
    failures: list[str] = []
    server: EaselServer | None = None

    def stop_on_failure(name: str, message: str) -> None:
        failures.append(f"model {name!r} failed to load: {message}")
        if server is not None:
            server.should_exit = True  # polled by uvicorn's main loop; safe from the loading thread

    on_load_failure = None if settings.keep_going else stop_on_failure
    if settings.ray is not None:
        from .scaleout.launch import serve_on_ray  # needs the ray extra

        serve_on_ray(settings, on_load_failure=on_load_failure)  # stops after a failure it reports
    else:
        server = build_server(settings, on_load_failure=on_load_failure)
        server.run()
    if failures:
        print(f"easel: error: {failures[0]} (start with --keep-going to serve the other models)", file=sys.stderr)
        return LOAD_FAILURE_EXIT_CODE
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    raise SystemExit(serve(argv))


if __name__ == "__main__":
    main()
