"""``/v1/responses`` in ``/openapi.json``: the image tool's request, the response object and its stream events.

The tool's image options are the Images API's rows (:mod:`server.protocol.tables`),
so they are documented with the bounds the server checks; the rest follows
:mod:`server.protocol.responses` and :mod:`server.protocol.response_objects`.
"""

from __future__ import annotations

from typing import Any

from . import tables as t
from .responses import ACTION, ECHOED, ECHOED_LISTS, ECHOED_OBJECTS, OWN, TOOL_IMAGE_FIELDS

STREAM_EVENTS = (
    "response.created", "response.in_progress", "response.output_item.added",
    "response.image_generation_call.in_progress", "response.image_generation_call.generating",
    "response.image_generation_call.partial_image", "response.image_generation_call.completed",
    "response.output_item.done", "response.completed", "response.failed",
)  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def responses_schemas(field_schema: Any, object_schema: Any) -> dict[str, Any]:
    """The components; ``field_schema`` and ``object_schema`` are :mod:`server.protocol.openapi`'s builders."""
    rows = tuple(row for row in t.EDIT if row.name in TOOL_IMAGE_FIELDS)
    image_ref = {"type": "object", "properties": {"image_url": {"type": "string", "pattern": "^data:"}}}
    tool = object_schema((*rows, ACTION), input_image_mask=image_ref)
    tool["properties"] = {
        "type": {"type": "string", "enum": ["image_generation"]},
        "model": {"type": "string", "description": "The image model: a local model, an alias or an OpenAI name."},
        "input_image_mask": {**image_ref, "description": "Inpainting mask: its transparent pixels are repainted."},
        **tool["properties"],
    }
    tool["required"] = ["type"]
    part = {"type": "object", "description": "input_text {text} or input_image {image_url: a data URL}."}
    message = {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["message", "image_generation_call"]},
            "role": {"type": "string", "enum": ["user", "assistant", "system", "developer"]},
            "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": part}]},
            "result": {"type": "string", "description": "image_generation_call items: the earlier image."},
        },
    }
    properties: dict[str, Any] = {
        "model": {"type": "string", "description": "The client's language model name; reported back."},
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": message}]},
        "tools": {"type": "array", "items": _ref("ImageGenerationTool"), "minItems": 1, "maxItems": 1},
        "tool_choice": {"description": "auto, required, {type: image_generation} or allowed_tools with it."},
        "previous_response_id": {"type": ["string", "null"]},
        "background": {"type": ["boolean", "null"], "enum": [False, None]},
        **{row.name: field_schema(row) for row in (*ECHOED, *OWN)},
        **{name: {"type": ["object", "null"]} for name in ECHOED_OBJECTS},
        **{name: {"type": ["array", "null"]} for name in ECHOED_LISTS},
    }
    request = {
        "type": "object",
        "properties": properties,
        "required": ["model", "input", "tools"],
        "additionalProperties": False,
    }
    call = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": "string", "enum": ["image_generation_call"]},
            "status": {"type": "string", "enum": ["in_progress", "completed", "failed"]},
            "action": {"type": "string", "enum": ["generate", "edit"]},
            "result": {"type": ["string", "null"]},
            "revised_prompt": {"type": "string"},
            "size": {"type": "string"},
            "quality": {"type": "string"},
            "output_format": {"type": "string"},
            "background": {"type": "string", "enum": ["opaque"]},
        },
        "required": ["id", "type", "status"],
    }
    response = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["response"]},
            "created_at": {"type": "integer"},
            "status": {"type": "string", "enum": ["in_progress", "completed", "failed"]},
            "model": {"type": "string"},
            "output": {"type": "array", "items": _ref("ImageGenerationCall")},
            "usage": {"type": ["object", "null"]},
            "tool_usage": {"type": ["object", "null"]},
            "error": {"type": ["object", "null"]},
        },
        "required": ["id", "object", "created_at", "status", "model", "output"],
    }
    event = {
        "type": "object",
        "properties": {"type": {"type": "string", "enum": list(STREAM_EVENTS)}, "sequence_number": {"type": "integer"}},
        "required": ["type", "sequence_number"],
    }
    return {
        "CreateResponseImageToolRequest": request,
        "ImageGenerationTool": tool,
        "ImageGenerationCall": call,
        "Response": response,
        "ResponseStreamEvent": event,
    }


def responses_paths(operation: Any, answer: Any, body: Any) -> dict[str, Any]:
    """The paths; ``operation``, ``answer`` and ``body`` are :mod:`server.protocol.openapi`'s builders."""
    retrieve = [{"in": "path", "name": "response_id", "required": True, "schema": {"type": "string"}}]
    return {
        "/v1/responses": {
            "post": operation(
                "createResponse",
                "The image_generation tool: a generation, or an edit of the input's images.",
                answer("Response", "ResponseStreamEvent"),
                requestBody=body(application_json="CreateResponseImageToolRequest"),
            )
        },
        "/v1/responses/{response_id}": {
            "get": operation(
                "getResponse", "A kept response (--url-ttl-seconds).", answer("Response"), parameters=retrieve
            )
        },
    }
