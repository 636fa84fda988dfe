"""``python -m server`` / ``easel``: run the API server (see ``--help`` and :mod:`server.config`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvicorn

from .app import create_app
from .config import load_settings
from .middleware import uvicorn_options


def main(argv: Sequence[str] | None = None) -> None:
    settings = load_settings(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        logging.getLogger("easel").warning(
            "listening on %s without API keys: anyone who can reach it can use it", settings.host
        )
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, **uvicorn_options(settings))


if __name__ == "__main__":
    main()
