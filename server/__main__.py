"""``python -m server`` / ``easel``: run the API server (see ``--help`` and :mod:`server.config`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvicorn

from .app import create_app
from .config import load_settings


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
    if settings.ray is not None:
        from .scaleout.launch import serve_on_ray  # needs the ray extra

        serve_on_ray(settings)
        return
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
