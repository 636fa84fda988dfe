"""``python -m server`` / ``easel``: run the API server (see ``--help`` and :mod:`server.config`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .config import load_settings
from .logs import configure_logging
from .runner import serve


def main(argv: Sequence[str] | None = None) -> None:
    settings = load_settings(argv)
    configure_logging(settings.log_level, settings.log_format)
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        logging.getLogger("easel").warning(
            "listening on %s without API keys: anyone who can reach it can use it", settings.host
        )
    serve(settings)


if __name__ == "__main__":
    main()
