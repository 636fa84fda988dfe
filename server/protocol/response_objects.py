"""What ``/v1/responses`` answers: OpenAI's response object with one ``image_generation_call`` item, and its events.

The shapes follow the openai SDK's types (``openai.types.responses``):
``Response``, ``ImageGenerationCall`` and the ``response.*`` stream events,
each event numbered by ``sequence_number`` from 0. ``usage`` counts the image
tool's tokens as the Images API does (prompt and input image in, image out;
no language model's tokens), and ``tool_usage.image_gen`` repeats them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .events import encode_event
from .images import ImageOptions, gpt_image_quality
from .responses import ResponsesRequest

NOT_IN_THE_RESPONSE = ("stream_options", "include")  # request-only settings: checked, not echoed


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def new_call_id() -> str:
    return "ig_" + secrets.token_hex(24)


@dataclass
class ResponseDraft:
    """One response while it is made: its ids and settings, then its image and usage."""

    request: ResponsesRequest
    options: ImageOptions
    action: str  # "generate" or "edit": what the call did
    id: str = field(default_factory=new_response_id)
    call_id: str = field(default_factory=new_call_id)
    created_at: int = field(default_factory=lambda: int(time.time()))
    result: str | None = None  # base64 of the image, once made
    usage: dict[str, Any] | None = None  # the Images API's usage block, once made
    error: dict[str, str] | None = None

    def item(self, status: str) -> dict[str, Any]:
        """The ``image_generation_call`` output item."""
        return {
            "id": self.call_id,
            "type": "image_generation_call",
            "status": status,
            "action": self.action,
            "result": self.result if status == "completed" else None,
            "revised_prompt": self.request.prompt,  # Easel does not rewrite prompts
            "size": self.options.size.label,
            "quality": gpt_image_quality(self.options.quality),
            "output_format": self.options.output_format,
            "background": "opaque",  # Easel's models make opaque images
        }

    def body(self, status: str) -> dict[str, Any]:
        """The response object; ``output`` holds the call once it has started."""
        request, done = self.request, status in ("completed", "failed")
        item_status = {"completed": "completed", "failed": "failed"}.get(status, "in_progress")
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": int(time.time()) if status == "completed" else None,
            "status": status,
            "error": self.error,
            "incomplete_details": None,
            "model": request.model,
            "output": [self.item(item_status)] if done else [],
            "tools": request.tools,
            "tool_choice": request.tool_choice,
            "previous_response_id": request.previous_response_id,
            "store": request.store,
            "background": False,
            "usage": _response_usage(self.usage) if status == "completed" else None,
            "tool_usage": _tool_usage(self.usage) if status == "completed" else None,
            **{name: value for name, value in request.echoed.items() if name not in NOT_IN_THE_RESPONSE},
        }
        body["parallel_tool_calls"] = body["parallel_tool_calls"] is not False
        body["text"] = body["text"] or {"format": {"type": "text"}}
        body["truncation"] = body["truncation"] or "disabled"
        return body


def _response_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage["input_tokens"],
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage["output_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


def _tool_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    image_gen = {name: usage[name] for name in ("input_tokens", "input_tokens_details", "output_tokens")}
    image_gen.update(total_tokens=usage["total_tokens"], output_tokens_details=usage["output_tokens_details"])
    return {"image_gen": image_gen, "web_search": {"num_requests": 0}}


class EventCounter:
    """The ``response.*`` events of one stream, numbered in the order they are made."""

    def __init__(self, draft: ResponseDraft) -> None:
        self.draft = draft
        self.sequence = 0

    def _event(self, event_type: str, **data: Any) -> bytes:
        event = encode_event(event_type, {"type": event_type, "sequence_number": self.sequence, **data})
        self.sequence += 1
        return event

    def lifecycle(self, event_type: str, status: str) -> bytes:
        """``response.created``, ``.in_progress``, ``.completed`` or ``.failed``: the whole response object."""
        return self._event(event_type, response=self.draft.body(status))

    def item(self, event_type: str, status: str) -> bytes:
        """``response.output_item.added`` or ``.done``."""
        return self._event(event_type, output_index=0, item=self.draft.item(status))

    def call(self, step: str) -> bytes:
        """``response.image_generation_call.in_progress``, ``.generating`` or ``.completed``."""
        return self._event(f"response.image_generation_call.{step}", output_index=0, item_id=self.draft.call_id)

    def partial_image(self, b64: str, index: int) -> bytes:
        options = self.draft.options
        return self._event(
            "response.image_generation_call.partial_image",
            output_index=0,
            item_id=self.draft.call_id,
            partial_image_b64=b64,
            partial_image_index=index,
            size=options.size.label,
            quality=gpt_image_quality(options.quality),
            background="opaque",
            output_format=options.output_format,
        )
