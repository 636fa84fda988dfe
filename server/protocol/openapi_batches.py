"""The Files and Batch APIs in ``/openapi.json``: paths and schemas as OpenAI's spec has them, for image batches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BATCH_ENDPOINTS = ["/v1/images/generations", "/v1/images/edits"]
BATCH_STATUSES = [
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
FILE_PURPOSES = ["batch", "vision", "user_data"]
TIMESTAMPS = (
    "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
    "cancelling_at", "cancelled_at",
)  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _integers(*names: str) -> dict[str, Any]:
    return {name: {"type": "integer"} for name in names}


def _list(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref(item)},
            "first_id": {"type": ["string", "null"]},
            "last_id": {"type": ["string", "null"]},
            "has_more": {"type": "boolean"},
        },
        "required": ["object", "data", "has_more"],
    }


def _expiry(low: int = 3600, high: int = 2_592_000) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "anchor": {"type": "string", "enum": ["created_at"]},
            "seconds": {"type": "integer", "minimum": low, "maximum": high},
        },
        "required": ["anchor", "seconds"],
    }


def batch_schemas() -> dict[str, Any]:
    metadata = {"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "null"}]}
    error = {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"},
             "param": {"type": ["string", "null"]}, "line": {"type": ["integer", "null"]}}}  # fmt: skip
    usage = {"type": "object", "properties": {**_integers("input_tokens", "output_tokens", "total_tokens")}}
    batch = {
        "type": "object",
        "description": "Fields with no value yet (a timestamp not reached, no output file) are left out.",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["batch"]},
            "endpoint": {"type": "string", "enum": BATCH_ENDPOINTS},
            "model": {"type": "string"},
            "errors": {
                "type": "object",
                "properties": {"object": {"type": "string"}, "data": {"type": "array", "items": error}},
            },  # fmt: skip
            "input_file_id": {"type": "string"},
            "completion_window": {"type": "string"},
            "status": {"type": "string", "enum": BATCH_STATUSES},
            "output_file_id": {"type": "string"},
            "error_file_id": {"type": "string"},
            **_integers(*TIMESTAMPS),
            "request_counts": {
                "type": "object",
                "properties": _integers("total", "completed", "failed"),
                "required": ["total", "completed", "failed"],
            },  # fmt: skip
            "usage": usage,
            "metadata": metadata,
        },
        "required": ["id", "object", "endpoint", "input_file_id", "completion_window", "status", "created_at"],
    }
    file = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["file"]},
            **_integers("bytes", "created_at", "expires_at"),
            "filename": {"type": "string"},
            "purpose": {"type": "string", "enum": [*FILE_PURPOSES, "batch_output"]},
            "status": {"type": "string", "enum": ["processed"]},
        },
        "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
    }
    create_batch = {
        "type": "object",
        "properties": {
            "input_file_id": {"type": "string"},
            "endpoint": {"type": "string", "enum": BATCH_ENDPOINTS},
            "completion_window": {"type": "string", "enum": ["24h"]},
            "metadata": metadata,
            "output_expires_after": _expiry(),
        },
        "required": ["input_file_id", "endpoint", "completion_window"],
    }
    create_file = {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "purpose": {"type": "string", "enum": FILE_PURPOSES},
            "expires_after": _expiry(),
        },
        "required": ["file", "purpose"],
    }
    deleted = {"type": "object", "properties": {"id": {"type": "string"}, "object": {"type": "string"},
               "deleted": {"type": "boolean"}}, "required": ["id", "object", "deleted"]}  # fmt: skip
    return {
        "Batch": batch,
        "ListBatchesResponse": _list("Batch"),
        "CreateBatchRequest": create_batch,
        "OpenAIFile": file,
        "ListFilesResponse": _list("OpenAIFile"),
        "CreateFileRequest": create_file,
        "DeleteFileResponse": deleted,
    }


def batch_paths(operation: Callable[..., dict[str, Any]], answer: Callable[..., dict[str, Any]],
                body: Callable[..., dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """The paths; ``operation``, ``answer`` and ``body`` are :mod:`server.protocol.openapi`'s builders."""

    def path(name: str) -> list[dict[str, Any]]:
        return [{"in": "path", "name": name, "required": True, "schema": {"type": "string"}}]

    def query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"in": "query", "name": name, "required": False, "schema": schema}

    after = query("after", {"type": "string"})
    file_list = [query("purpose", {"type": "string"}), query("limit", {"type": "integer", "minimum": 1,
                 "maximum": 10_000}), query("order", {"type": "string", "enum": ["asc", "desc"]}), after]  # fmt: skip
    batch_list = [query("limit", {"type": "integer", "minimum": 1, "maximum": 100}), after]
    content = {"200": {"description": "The file's bytes", "content": {"application/octet-stream": {}}},
               "default": answer("Batch")["default"]}  # fmt: skip
    return {
        "/v1/files": {
            "post": operation("createFile", "Upload a file.", answer("OpenAIFile"),
                              requestBody=body(**{"multipart_form-data": "CreateFileRequest"})),
            "get": operation("listFiles", "Files, newest first.", answer("ListFilesResponse"), parameters=file_list),
        },
        "/v1/files/{file_id}": {
            "get": operation("retrieveFile", "A file object.", answer("OpenAIFile"), parameters=path("file_id")),
            "delete": operation("deleteFile", "Delete a file.", answer("DeleteFileResponse"),
                                parameters=path("file_id")),
        },
        "/v1/files/{file_id}/content": {
            "get": operation("downloadFile", "A file's bytes.", content, parameters=path("file_id")),
        },
        "/v1/batches": {
            "post": operation("createBatch", "Create and run a batch of image requests.", answer("Batch"),
                              requestBody=body(application_json="CreateBatchRequest")),
            "get": operation("listBatches", "Batches, newest first.", answer("ListBatchesResponse"),
                             parameters=batch_list),
        },
        "/v1/batches/{batch_id}": {
            "get": operation("retrieveBatch", "A batch.", answer("Batch"), parameters=path("batch_id")),
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": operation("cancelBatch", "Cancel a batch.", answer("Batch"), parameters=path("batch_id")),
        },
    }  # fmt: skip
