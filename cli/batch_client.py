"""The Files and Batch API calls ``easel batch`` makes, on a running Easel (or any OpenAI-compatible server).

Every failure is a :class:`CommandError`: the API's error envelope in its own
words, or the server that could not be reached.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from .image_request import CommandError
from .remote import TIMEOUT, api_base, api_error

FINISHED = ("completed", "failed", "expired", "cancelled")


class BatchClient:
    def __init__(self, server: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base = api_base(server)
        self._http = httpx.Client(base_url=self.base, timeout=TIMEOUT, headers=headers)

    def __enter__(self) -> BatchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def upload(self, name: str, data: bytes) -> str:
        """A batch input file; its file id."""
        files = {"file": (name, data, "application/jsonl")}
        return str(self._call("POST", "/files", files=files, data={"purpose": "batch"}).json()["id"])

    def delete_file(self, file_id: str) -> None:
        self._call("DELETE", f"/files/{quote(file_id, safe='')}")

    def file(self, file_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/files/{quote(file_id, safe='')}").json())

    def content(self, file_id: str) -> bytes:
        return self._call("GET", f"/files/{quote(file_id, safe='')}/content").content

    def create(self, file_id: str, endpoint: str, metadata: dict[str, str]) -> dict[str, Any]:
        body: dict[str, Any] = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h"}
        if metadata:
            body["metadata"] = metadata
        return dict(self._call("POST", "/batches", json=body).json())

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/batches/{quote(batch_id, safe='')}").json())

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/batches/{quote(batch_id, safe='')}/cancel").json())

    def recent(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` batches, newest first (one page is at most 100: later pages follow ``after``)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": min(limit, 100)}
        while len(found) < limit:
            page = self._call("GET", "/batches", params=params).json()
            found.extend(page["data"])
            if not page.get("has_more") or not page["data"]:
                break
            params = {"limit": min(limit - len(found), 100), "after": page["data"][-1]["id"]}
        return found[:limit]

    def _call(self, method: str, path: str, **send: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **send)
        except httpx.HTTPError as error:
            raise CommandError(f"cannot reach {self.base}{path}: {error}") from None
        if response.status_code >= 400:
            raise api_error(response)
        return response
