"""Image files out of request bodies: multipart parts as the openai SDK sends them, or data URLs in JSON edits.

Each file is limited to ``--max-upload-mb`` as it is read (the request body
limit, ``--max-body-mb``, applies to the whole request first); decoding the
bytes into pixels is :mod:`server.serving.decoding`.

Edits arrive as ``multipart/form-data`` (one ``image`` part, or ``image[]``
parts for a list, optional ``mask``) or ``application/json`` with ``images:
[{"image_url": "data:..."}]`` and ``mask: {"image_url": ...}`` (``markup`` likewise). Up to 16
images per edit, as OpenAI: the first is edited, the others are references.
Repeated ``name[]`` text parts (how the openai SDK sends a list field, e.g.
``image_weights``) arrive as a list under ``name``.

JSON edits accept only ``data:`` URLs with base64 content. Easel never fetches
``http(s)`` URLs: a server that fetches what clients name can be steered at
internal addresses (SSRF), and Easel is meant to run on offline machines.
``{"file_id": ...}`` names an image uploaded to ``/v1/files`` (purpose ``vision`` or ``user_data``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..http.errors import APIError, invalid, shown
from ..protocol.edits import UploadedBody
from ..protocol.fields import media_type, parse_json, require_object
from .decoding import UploadLimits

MAX_FILE_PARTS = 20  # OpenAI takes up to 16 images and a mask; more is refused by the parser
MAX_EDIT_IMAGES = 16  # OpenAI's limit
EDIT_FILE_PARTS = frozenset({"image", "image[]", "mask", "markup"})
JSON_IMAGE_FIELDS = ("images", "mask", "markup")
# (file_id, param) -> the uploaded image's bytes, or an APIError naming param; None: no Files API on this server.
FileBytes = Callable[[str, str], bytes]


@dataclass(frozen=True)
class MultipartBody:
    fields: dict[str, Any]  # every part not named in file_parts, for the protocol's FieldReader
    files: dict[str, list[bytes]]  # contents of the file parts, by part name as sent


def part_param(name: str) -> str:
    """The parameter a part reports errors under: ``image[]`` parts are ``image``."""
    return name.removesuffix("[]")


async def read_multipart(request: Request, file_parts: frozenset[str], limits: UploadLimits) -> MultipartBody:
    """Split a multipart body into text fields and file contents, enforcing the byte limit per file."""
    fields: dict[str, Any] = {}
    files: dict[str, list[bytes]] = {}
    async with request.form(max_files=MAX_FILE_PARTS) as form:
        for name, value in form.multi_items():
            if name not in file_parts and name.endswith("[]"):  # a list field, one part per item
                items = fields.setdefault(name.removesuffix("[]"), [])
                if not isinstance(items, list) or not isinstance(value, str):
                    param = part_param(name)
                    raise invalid(param, f"'{param}' was given both as a value and as a list.", code="invalid_value")
                items.append(value)
                continue
            if name not in file_parts:
                if name in fields:
                    raise invalid(shown(name), f"'{shown(name)}' was given more than once.", code="invalid_value")
                fields[name] = value
                continue
            param = part_param(name)
            if not isinstance(value, UploadFile):
                raise invalid(param, f"'{param}' must be a file upload (a multipart file part), not a text field.")
            if value.size is not None and value.size > limits.max_bytes:
                raise invalid(
                    param, f"The '{param}' file is {value.size} bytes; the limit is {limits.max_bytes} bytes."
                )
            files.setdefault(name, []).append(await value.read())
    return MultipartBody(fields, files)


async def read_variation_body(request: Request, limits: UploadLimits) -> UploadedBody:
    if media_type(request) != "multipart/form-data":
        message = "Send a variation request as multipart/form-data with an 'image' file part."
        raise invalid(None, message, code="unsupported_content_type")
    body = await read_multipart(request, frozenset({"image"}), limits)
    return UploadedBody(body.fields, True, "image", body.files.get("image", []))


async def read_edit_body(request: Request, limits: UploadLimits, files: FileBytes | None = None) -> UploadedBody:
    kind = media_type(request)
    if kind == "multipart/form-data":
        body = await read_multipart(request, EDIT_FILE_PARTS, limits)
        mask, markup = _at_most_one(body, "mask"), _at_most_one(body, "markup")
        images = body.files.get("image", []) + body.files.get("image[]", [])
        refuse_too_many_images(len(images), "image")
        return UploadedBody(body.fields, True, "image", images, mask, markup)
    if kind == "application/json":
        return await asyncio.to_thread(json_edit_body, await request.body(), limits, files)
    raise invalid(
        None,
        "Send an edit as multipart/form-data (image, mask, prompt, ...) or as application/json "
        "(images, mask, prompt, ...).",
        code="unsupported_content_type",
    )


def _at_most_one(body: MultipartBody, part: str) -> bytes | None:
    files = body.files.get(part, [])
    if len(files) > 1:
        raise invalid(part, f"Send one {part}; {len(files)} were sent.", code="invalid_value")
    return files[0] if files else None


def refuse_too_many_images(count: int, param: str) -> None:
    if count > MAX_EDIT_IMAGES:
        raise invalid(
            param,
            f"An edit takes at most {MAX_EDIT_IMAGES} images, but {count} were sent.",
            code="invalid_value",
        )


def json_edit_body(raw: bytes, limits: UploadLimits, files: FileBytes | None = None) -> UploadedBody:
    """A JSON edit body with its data URLs decoded (megabytes of base64: run it in a thread)."""
    return json_edit_payload(require_object(parse_json(raw)), limits, files)


def json_edit_payload(payload: dict[str, Any], limits: UploadLimits, files: FileBytes | None = None) -> UploadedBody:
    """A parsed JSON edit body (a batch line's ``body``) with its images read."""
    refs = payload.get("images")
    if refs is not None and not isinstance(refs, list):
        raise invalid("images", "'images' must be an array of {\"image_url\": ...} objects.", code="invalid_type")
    refuse_too_many_images(len(refs or []), "images")
    count = len(refs or [])
    images = [_numbered_ref(ref, number, count, limits, files) for number, ref in enumerate(refs or [], start=1)]
    mask, markup = (_optional_ref(payload, name, limits, files) for name in ("mask", "markup"))
    fields = {name: value for name, value in payload.items() if name not in JSON_IMAGE_FIELDS}
    return UploadedBody(fields, False, "images", images, mask, markup)


def _numbered_ref(ref: object, number: int, count: int, limits: UploadLimits, files: FileBytes | None) -> bytes:
    """One of the ``images``; with several, an error says which (1-based)."""
    try:
        return image_ref_bytes(ref, "images", limits, files)
    except APIError as error:
        if count == 1:
            raise
        raise invalid("images", f"Image {number} of {count}: {error.message}", code=error.code) from None


def _optional_ref(payload: dict[str, Any], name: str, limits: UploadLimits, files: FileBytes | None) -> bytes | None:
    ref = payload.get(name)
    return None if ref is None else image_ref_bytes(ref, name, limits, files)


def data_url_bytes(url: str, param: str, limits: UploadLimits) -> bytes:
    """The bytes of a base64 ``data:`` URL; remote URLs are refused (see the module docstring)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        raise invalid(
            param,
            f"'{param}' is a remote URL; Easel does not fetch remote images. "
            "Send the image inline as a data URL (data:image/png;base64,...) or upload it as multipart/form-data.",
        )
    if scheme != "data":
        raise invalid(param, f"'{param}' must be a base64 data URL (data:image/png;base64,...).")
    header, sep, payload = url.partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise invalid(param, f"'{param}' must be a base64 data URL (data:image/png;base64,...).")
    if len(payload) // 4 * 3 > limits.max_bytes:
        raise invalid(param, f"The '{param}' image is larger than {limits.max_bytes} bytes.")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(param, f"'{param}' does not hold valid base64 data.") from None


def image_ref_bytes(ref: object, param: str, limits: UploadLimits, files: FileBytes | None = None) -> bytes:
    """The bytes behind one JSON image reference (``{"image_url": ...}`` or ``{"file_id": ...}``)."""
    if not isinstance(ref, dict):
        raise invalid(param, f"'{param}' must be an object with an 'image_url'.")
    unknown = sorted(set(ref) - {"image_url", "file_id"})
    if unknown:
        raise invalid(param, f"'{param}' has unknown field(s): {', '.join(unknown)}.")
    if "file_id" in ref:
        return _file_ref_bytes(ref, param, limits, files)
    url = ref.get("image_url")
    if not isinstance(url, str):
        raise invalid(param, f"'{param}' must have a string 'image_url'.")
    return data_url_bytes(url, param, limits)


def _file_ref_bytes(ref: dict[str, Any], param: str, limits: UploadLimits, files: FileBytes | None) -> bytes:
    file_id = ref["file_id"]
    if "image_url" in ref:
        raise invalid(param, f"'{param}' gives both 'image_url' and 'file_id'; send one.")
    if not isinstance(file_id, str) or not file_id:
        raise invalid(param, f"'{param}' must have a string 'file_id'.")
    if files is None:
        raise invalid(param, f"'{param}' uses file_id, but this server has no Files API; send a data URL instead.")
    data = files(file_id, param)
    if len(data) > limits.max_bytes:
        raise invalid(param, f"The '{param}' image is larger than {limits.max_bytes} bytes.")
    return data
