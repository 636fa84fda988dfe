"""Request bodies: the media type, and JSON parsed off the event loop with bad input as a 400.

A JSON body may be as large as the body limit (edits carry images as data
URLs), so it is parsed in a thread. Bodies Python's parser refuses, nests too
deep for it, or that hold an integer over its digit limit are a 400
``invalid_json``, and so is a string with a lone surrogate escape
(``"\\ud800"``): it is not Unicode text, so no tokenizer can read it and no
response that echoed it could be encoded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request

from .errors import invalid


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_json(request: Request) -> Any:
    return await asyncio.to_thread(parse_json, await request.body())


def parse_json(raw: bytes) -> Any:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        raise invalid(
            None,
            "We could not parse the JSON body of your request. Send a JSON object with Content-Type: application/json.",
            code="invalid_json",
        ) from None
    if not _is_unicode_text(value):
        raise invalid(
            None,
            "The JSON body holds a lone surrogate escape (\\ud800-\\udfff without its pair), which is not valid Unicode text.",
            code="invalid_json",
        )
    return value


def _is_unicode_text(value: Any) -> bool:
    """Whether every string (and key) in a parsed JSON value encodes as UTF-8."""
    pending = [value]  # iterative: a body nested nearly to the parser's limit must not overflow here
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return False
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True
