"""``python -m server`` / ``easel``: run the API server (see ``--help`` and :mod:`server.config`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from .config import load_settings
from .runner import serve


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
    serve(settings)


if __name__ == "__main__":
    main()
