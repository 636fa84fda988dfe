"""Server-Sent Events in the shape of OpenAI's image streams.

Each event is ``event: <type>`` and one ``data: <json>`` line, then a blank
line; the JSON repeats the type under ``"type"``, which is what the openai SDK
dispatches on. Generations stream ``image_generation.partial_image`` events
(``partial_image_index`` 0, 1, ...) then ``image_generation.completed`` with
the final image and usage; edits stream the same as ``image_edit.*``.

An error after the stream has started (the 200 is already sent) is an
``error`` event whose data is ``{"type": "error", "error": {...}}``: the
openai SDK raises ``openai.APIError`` for any data object with an ``error`` key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..http.errors import APIError
from .images import ImageOptions, gpt_image_quality
from .usage import usage

StreamKind = Literal["image_generation", "image_edit"]


def encode_event(event_type: str, data: Mapping[str, Any]) -> bytes:
    # json.dumps never emits a raw newline, so the payload is always one data line.
    payload = json.dumps(data, separators=(",", ":"))
    return f"event: {event_type}\ndata: {payload}\n\n".encode()


@dataclass(frozen=True)
class ImageEventFields:
    """What every image event repeats about the request."""

    size: str
    quality: str
    background: str
    output_format: str
    safety_identifier: str | None = None  # completed events echo it, as OpenAI's

    @classmethod
    def of(cls, options: ImageOptions) -> ImageEventFields:
        return cls(
            size=options.size.label,
            quality=gpt_image_quality(options.quality),
            background="opaque",  # Easel's models make opaque images
            output_format=options.output_format,
            safety_identifier=options.safety_identifier,
        )


def _image_event(event_type: str, fields: ImageEventFields, b64_json: str, **specific: Any) -> bytes:
    return encode_event(
        event_type,
        {
            "type": event_type,
            "b64_json": b64_json,
            "created_at": int(time.time()),
            "size": fields.size,
            "quality": fields.quality,
            "background": fields.background,
            "output_format": fields.output_format,
            **specific,
        },
    )


def partial_image_event(kind: StreamKind, fields: ImageEventFields, b64_json: str, index: int) -> bytes:
    return _image_event(f"{kind}.partial_image", fields, b64_json, partial_image_index=index)


def completed_event(kind: StreamKind, fields: ImageEventFields, b64_json: str, usage: Mapping[str, Any]) -> bytes:
    echoed = {} if fields.safety_identifier is None else {"safety_identifier": fields.safety_identifier}
    return _image_event(f"{kind}.completed", fields, b64_json, usage=dict(usage), **echoed)


def error_event(error: APIError) -> bytes:
    body = {"message": error.message, "type": error.type, "param": error.param, "code": error.code}
    return encode_event("error", {"type": "error", "error": body})


def shared_usage(total: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """The request's usage as ``n`` per-image parts that add up to it: the first also carries the input tokens."""
    details = total["input_tokens_details"]
    per_image = total["output_tokens"] // n
    parts = [usage(0, per_image) for _ in range(n)]
    parts[0] = usage(details["text_tokens"], total["output_tokens"] - per_image * (n - 1), details["image_tokens"])
    return parts
