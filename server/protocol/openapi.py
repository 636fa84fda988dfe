"""``/openapi.json``: Easel's own API as an OpenAPI 3.1 document, built from the field tables validation reads.

The request schemas come from :mod:`server.protocol.tables` row by row, so the
document lists exactly the fields, bounds and values the server checks.
Fields that are Easel's own carry ``x-easel-extension: true``; values OpenAI
has that Easel refuses are listed under ``x-easel-refused`` with the reason.
Operation ids are OpenAI's where the operation is OpenAI's.
"""

from __future__ import annotations

from typing import Any

from . import tables as t
from .openapi_batches import batch_paths, batch_schemas
from .openapi_responses import responses_paths, responses_schemas

SIZE_PATTERN = "^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$"
EVENT_IMAGE_FORMATS = ["png", "jpeg", "webp"]  # streams never send gif or svg


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """JSON null means the default for every optional field."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    if "enum" in schema:
        return {**schema, "type": [schema["type"], "null"], "enum": [*schema["enum"], None]}
    if "type" in schema:
        return {**schema, "type": [schema["type"], "null"]}
    return schema


def _binary(field: t.Field) -> dict[str, Any]:
    one = {"type": "string", "format": "binary"}
    if field.name != "image":
        return one
    most = t.MAX_EDIT_IMAGES if field.many else 1  # image[]: edits take references, variations one image
    return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": most}]}


def _base_schema(field: t.Field) -> dict[str, Any]:
    kind = field.kind
    if kind in ("integer", "number"):
        return {"type": kind, "minimum": field.low, "maximum": field.high}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "numbers":
        return {"type": "array", "items": {"type": "number", "minimum": field.low, "maximum": field.high}}
    if kind == "enum":
        return {"type": "string", "enum": list(field.choices)}
    if kind == "size":
        return {
            "anyOf": [
                {"type": "string", "enum": ["auto", *t.STANDARD_SIZES]},
                {"type": "string", "pattern": SIZE_PATTERN},
            ]
        }
    if kind == "object":
        return object_schema(field.properties)
    if kind == "file":
        return _binary(field)
    return {"type": "string"} if field.max_length is None else {"type": "string", "maxLength": field.max_length}


def field_schema(field: t.Field) -> dict[str, Any]:
    """One field's JSON schema, from its table row."""
    schema = _base_schema(field)
    if field.kind == "string" and field.required:
        schema["minLength"] = 1
    if not field.required and field.kind != "file":
        schema = _nullable(schema)
    schema["description"] = field.meaning
    if field.default is not None:
        schema["default"] = field.default
    if field.refused:
        schema["x-easel-refused"] = dict(field.refused)
    if field.extension:
        schema["x-easel-extension"] = True
    return schema


def object_schema(fields: tuple[t.Field, ...], **replaced: dict[str, Any]) -> dict[str, Any]:
    """An object of ``fields`` (unknown ones are refused, as the server does); ``replaced`` swaps some schemas."""
    properties = {f.name: replaced.get(f.name) or field_schema(f) for f in fields}
    for f in fields:
        for alias in f.aliases:  # peer servers' names: documented apart, as the server takes them
            properties[alias] = {**field_schema(f), "description": f"Alias of {f.name}; send one of the two."}
    required = [f.name for f in fields if f.required]
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    return {**schema, "required": required} if required else schema


def _json_edit_schema() -> dict[str, Any]:
    """Edits as JSON: ``images`` (a list of references) and references for ``mask`` and ``markup``."""
    images = {"type": "array", "items": _ref("ImageRefParam"), "minItems": 1, "maxItems": t.MAX_EDIT_IMAGES}
    fields = tuple(f for f in t.EDIT if f.name != "image")
    schema = object_schema(fields, mask=_ref("ImageRefParam"), markup=_ref("ImageRefParam"))
    schema["properties"] = {"images": {**images, "description": t.EDIT_IMAGE.meaning}, **schema["properties"]}
    schema["required"] = ["images", *schema["required"]]
    return schema


def _image_ref() -> dict[str, Any]:
    data_url = {"type": "string", "pattern": "^data:", "description": "A base64 data: URL; remote URLs are refused."}
    file_id = {"type": "string", "description": "An image uploaded to /v1/files (purpose vision or user_data)."}
    return {
        "anyOf": [
            {"type": "object", "properties": {"image_url": data_url}, "required": ["image_url"]},
            {"type": "object", "properties": {"file_id": file_id}, "required": ["file_id"]},
        ]
    }


def _answer_schemas() -> dict[str, Any]:
    usage_details = {
        "type": "object",
        "properties": {"text_tokens": {"type": "integer"}, "image_tokens": {"type": "integer"}},
    }
    usage = {
        "type": "object",
        "properties": {
            "input_tokens": {"type": "integer"},
            "input_tokens_details": usage_details,
            "output_tokens": {"type": "integer"},
            "output_tokens_details": usage_details,
            "total_tokens": {"type": "integer"},
        },
        "required": ["input_tokens", "input_tokens_details", "output_tokens", "total_tokens"],
    }
    image = {
        "type": "object",
        "properties": {
            "b64_json": {"type": "string"},
            "url": {"type": "string", "format": "uri"},
            "revised_prompt": {"type": "string", "description": "dall-e-3 answers: the prompt as used."},
            "seed": {"type": "integer", "x-easel-extension": True, "description": "The seed this image came from."},
        },
    }
    svg_usage = {
        "type": "object",
        "description": "svg answers: vtracer authors no tokens, so every count is 0.",
        "properties": {"model": {"type": "string"}, **{name: {"type": "integer"} for name in t.SVG_USAGE_COUNTS}},
    }
    answer = {
        "type": "object",
        "description": "GPT image names add background, output_format, quality, size, usage and safety_identifier.",
        "properties": {
            "created": {"type": "integer"},
            "data": {"type": "array", "items": _ref("Image")},
            "background": {"type": "string", "enum": ["opaque"]},
            "output_format": {"type": "string", "enum": list(t.OUTPUT_FORMAT.choices)},
            "quality": {"type": "string", "enum": ["low", "medium", "high", "xhigh", "max"]},
            "size": {"type": "string", "pattern": SIZE_PATTERN, "description": "The delivered WIDTHxHEIGHT."},
            "usage": _ref("ImagesUsage"),
            "safety_identifier": {"type": "string"},
            "svg_usage": svg_usage,
        },
        "required": ["created", "data"],
    }
    return {"ImagesUsage": usage, "Image": image, "ImagesResponse": answer, **_event_schemas()}


def _event_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for kind, prefix in (("image_generation", "ImageGen"), ("image_edit", "ImageEdit")):
        shared = {
            "b64_json": {"type": "string"},
            "created_at": {"type": "integer"},
            "size": {"type": "string", "pattern": SIZE_PATTERN},
            "quality": {"type": "string", "enum": ["low", "medium", "high", "xhigh", "max"]},
            "background": {"type": "string", "enum": ["opaque"]},
            "output_format": {"type": "string", "enum": EVENT_IMAGE_FORMATS},
        }
        required = ["type", *shared]
        schemas[f"{prefix}PartialImageEvent"] = {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": [f"{kind}.partial_image"]},
                **shared,
                "partial_image_index": {"type": "integer"},
            },
            "required": [*required, "partial_image_index"],
        }
        schemas[f"{prefix}CompletedEvent"] = {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": [f"{kind}.completed"]},
                **shared,
                "usage": _ref("ImagesUsage"),
                "safety_identifier": {"type": "string"},
            },
            "required": [*required, "usage"],
        }
        schemas[f"{prefix}StreamEvent"] = {
            "anyOf": [_ref(f"{prefix}PartialImageEvent"), _ref(f"{prefix}CompletedEvent"), _ref("ErrorEvent")]
        }
    return schemas


def _error_schemas() -> dict[str, Any]:
    nullable_string = {"type": ["string", "null"]}
    error = {
        "type": "object",
        "properties": {
            "message": {"type": "string"},
            "type": {"type": "string"},
            "param": nullable_string,
            "code": nullable_string,
        },
        "required": ["message", "type", "param", "code"],
    }
    envelope = {"type": "object", "properties": {"error": error}, "required": ["error"]}
    event = {"type": "object", "properties": {"type": {"type": "string", "enum": ["error"]}, "error": error}}
    return {"Error": envelope, "ErrorEvent": event}


def _model_schemas() -> dict[str, Any]:
    model = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "alias_of": {"type": "string", "x-easel-extension": True},
            "status": {"type": "string", "enum": ["loading", "ready", "failed"], "x-easel-extension": True},
            "error": {"type": "string", "x-easel-extension": True},
            "capabilities": {"type": ["object", "null"], "x-easel-extension": True},
        },
        "required": ["id", "object", "created", "owned_by"],
    }
    listing = {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref("Model")},
        },
        "required": ["object", "data"],
    }
    return {"Model": model, "ListModelsResponse": listing}


def _answer(schema: str, stream_event: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(schema)}}
    if stream_event is not None:
        content["text/event-stream"] = {"schema": _ref(stream_event)}
    return {
        "200": {"description": "OK", "content": content},
        "default": {"description": "An error", "content": {"application/json": {"schema": _ref("Error")}}},
    }


def _operation(operation_id: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "responses": responses, **extra}


def _body(**content: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {kind.replace("_", "/", 1): {"schema": _ref(name)} for kind, name in content.items()},
    }


def _paths() -> dict[str, Any]:
    public: list[dict[str, Any]] = []  # no key needed
    model_param = [{"in": "path", "name": "model", "required": True, "schema": {"type": "string"}}]
    file_param = [{"in": "path", "name": "name", "required": True, "schema": {"type": "string"}}]
    binary = {
        "200": {
            "description": "The image file",
            "content": {kind: {} for kind in ("image/png", "image/jpeg", "image/webp", "image/gif", "image/svg+xml")},
        }
    }
    ok = {"200": {"description": "OK", "content": {"application/json": {}}}}
    generation = _body(application_json="CreateImageRequest")
    edit = _body(**{"multipart_form-data": "CreateImageEditRequest", "application_json": "EditImageBodyJsonParam"})
    variation = _body(**{"multipart_form-data": "CreateImageVariationRequest"})
    return {
        "/v1/images/generations": {
            "post": _operation(
                "createImage",
                "Text to image.",
                _answer("ImagesResponse", "ImageGenStreamEvent"),
                requestBody=generation,
            )
        },
        "/v1/images/edits": {
            "post": _operation(
                "createImageEdit", "Inpainting.", _answer("ImagesResponse", "ImageEditStreamEvent"), requestBody=edit
            )
        },
        "/v1/images/variations": {
            "post": _operation(
                "createImageVariation", "Variations of an image.", _answer("ImagesResponse"), requestBody=variation
            )
        },
        **responses_paths(_operation, _answer, _body),
        **batch_paths(_operation, _answer, _body),
        "/v1/models": {"get": _operation("listModels", "Models and aliases.", _answer("ListModelsResponse"))},
        "/v1/models/{model}": {
            "get": _operation("retrieveModel", "One model or alias.", _answer("Model"), parameters=model_param)
        },
        "/v1/files/images/{name}": {
            "get": _operation("getImageFile", "A url image.", binary, parameters=file_param, security=public)
        },
        "/health": {"get": _operation("health", "Liveness.", ok, security=public)},
        "/health/ready": {"get": _operation("ready", "Readiness: 503 until models load.", ok, security=public)},
        "/openapi.json": {"get": _operation("openapi", "This document.", ok, security=public)},
    }


def openapi_document() -> dict[str, Any]:
    """The whole document; the server builds it once."""
    schemas = {
        "CreateImageRequest": object_schema(t.GENERATION),
        "CreateImageEditRequest": object_schema(t.EDIT),
        "EditImageBodyJsonParam": _json_edit_schema(),
        "CreateImageVariationRequest": object_schema(t.VARIATION),
        "ImageRefParam": _image_ref(),
        **_answer_schemas(),
        **_error_schemas(),
        **_model_schemas(),
        **responses_schemas(field_schema, object_schema),
        **batch_schemas(),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Easel",
            "version": "1",
            "description": "OpenAI's Images, Models, Files and Batch APIs and the Responses API's image tool on local "
            "prior+decoder models, plus Easel's extensions "
            "(x-easel-extension). The README says what each field means.",
        },
        "servers": [{"url": "/"}],
        "security": [{"ApiKeyAuth": []}],
        "paths": _paths(),
        "components": {"schemas": schemas, "securitySchemes": {"ApiKeyAuth": {"type": "http", "scheme": "bearer"}}},
    }
