"""``easel serve``: the API server (:mod:`server.__main__`), every option as ``python -m server``."""

from __future__ import annotations


def run(name: str, argv: list[str]) -> int:
    from server.__main__ import serve

    return serve(argv)
