"""Send one image request to a running Easel (or any OpenAI-compatible image API) and collect the files.

Generations and edits stream (Server-Sent Events) so partial images show
progress as they arrive; variations, which the API does not stream, are one
JSON answer. Errors are the API's envelope, reported in its own words.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
from tqdm import tqdm

from pipelines.tasks import Task

from .image_request import CommandError, Request

ENDPOINTS = {Task.GENERATE: "images/generations", Task.EDIT: "images/edits", Task.VARIATION: "images/variations"}
TIMEOUT = httpx.Timeout(30.0, read=600.0)  # a slow model on a CPU may take minutes between events


def api_base(server: str) -> str:
    """``http://host:port`` or ``.../v1``, as the API's base (``.../v1``)."""
    base = server.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


def run_remote(request: Request, server: str, api_key: str | None, partial_images: int) -> list[bytes]:
    url = f"{api_base(server)}/{ENDPOINTS[request.task]}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    fields = dict(request.fields, response_format="b64_json")
    streamed = request.task != Task.VARIATION
    if streamed:
        fields.update(stream=True, partial_images=partial_images)
    try:
        with httpx.Client(timeout=TIMEOUT, headers=headers) as client, _send(client, url, request, fields) as response:
            if response.status_code >= 400:
                response.read()
                raise api_error(response)
            if streamed:
                return _collect_stream(response, partial_images, int(fields.get("n", 1)))
            response.read()
            return [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]
    except httpx.HTTPError as error:
        raise CommandError(f"cannot reach {url}: {error}") from None


def _send(client: httpx.Client, url: str, request: Request, fields: dict[str, Any]):
    if request.task == Task.GENERATE:
        return client.stream("POST", url, json=fields)
    form = {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in fields.items()}
    files = {"image": ("image", request.image or b"")}
    if request.mask is not None:
        files["mask"] = ("mask.png", request.mask)
    return client.stream("POST", url, data=form, files=files)


def api_error(response: httpx.Response) -> CommandError:
    """The API's error envelope as a one-line :class:`CommandError` (status, message, and the field it names)."""
    try:
        error = response.json()["error"]
        return CommandError(f"{response.status_code}: {error['message']}", error.get("param"))
    except (ValueError, KeyError, TypeError):
        return CommandError(f"{response.status_code}: {response.text[:200]}")


def _collect_stream(response: httpx.Response, partial_images: int, n: int) -> list[bytes]:
    """The completed images, in order; a bar counts partial images and finished ones as they arrive."""
    finished: list[bytes] = []
    with tqdm(total=partial_images + n, desc="stream", unit="image", file=sys.stderr) as bar:
        for event in _events(response):
            kind = str(event.get("type", ""))
            if kind == "error" or "error" in event:
                error = event.get("error") or {}
                raise CommandError(str(error.get("message", event)), error.get("param"))
            if kind.endswith(".partial_image"):
                bar.set_postfix_str(f"partial {event.get('partial_image_index', 0) + 1}")
                bar.update(1)
            elif kind.endswith(".completed"):
                finished.append(base64.b64decode(event["b64_json"]))
                bar.set_postfix_str(f"image {len(finished)}/{n}")
                bar.update(1)
        bar.total = bar.n  # fewer partial images than asked for is normal (fewer decoder steps)
    if len(finished) != n:
        raise CommandError(f"the stream ended after {len(finished)} of {n} images")
    return finished


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Each SSE event's JSON data (comments and keep-alives skipped)."""
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []
    if data:
        yield json.loads("\n".join(data))
