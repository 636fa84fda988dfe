"""uvicorn: the h11 protocol class the connection guard extends, and the internals it relies on.

:class:`server.http.guard.GuardedH11Protocol` subclasses ``uvicorn.protocols.http.h11_impl.H11Protocol``:
it overrides ``connection_made``, ``data_received``, ``on_response_complete``, ``connection_lost`` and
``send_400_response``, and reads ``conn``, ``cycle`` (``scope``, ``response_started``, ``response_complete``,
``disconnected``, ``message_event``), ``connections``, ``transport``, ``loop`` and ``config``. None of that is
uvicorn's public API, so a server checks it with :func:`check_h11_protocol` before it serves with the subclass.
"""

from __future__ import annotations

from .versions import UntestedVersion, VersionRange, check

TESTED = VersionRange("uvicorn", "0.55", "0.56", "the internals of its h11 protocol class", __name__)
OVERRIDDEN = ("connection_made", "data_received", "on_response_complete", "connection_lost", "send_400_response")


def check_h11_protocol() -> None:
    """Raise :class:`UntestedVersion` unless the installed uvicorn is one the connection guard was tested with."""
    check(TESTED)
    from uvicorn.protocols.http.h11_impl import H11Protocol

    missing = [name for name in OVERRIDDEN if not callable(getattr(H11Protocol, name, None))]
    if missing:
        raise UntestedVersion(f"uvicorn's H11Protocol has no {', '.join(missing)}: {TESTED.requirement} has them")
