"""h11: the size limit of an incomplete event, which h11 keeps in a private module.

The connection guard (:mod:`server.http.middleware`) answers headers over that limit with a 431, so it needs the
limit h11 applies when uvicorn's ``h11_max_incomplete_event_size`` is not set; uvicorn imports the same private
name. Everything else the guard reads of h11 (``Connection.their_state``, ``trailing_data``, the states) is public.
"""

from __future__ import annotations

from .versions import VersionRange, check

TESTED = VersionRange("h11", "0.16", "0.17", "h11._connection.DEFAULT_MAX_INCOMPLETE_EVENT_SIZE", __name__)


def incomplete_event_limit(configured: int | None) -> int:
    """The bytes h11 buffers for one incomplete event (a request's headers): ``configured``, else h11's default."""
    check(TESTED)
    from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE

    return configured or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
