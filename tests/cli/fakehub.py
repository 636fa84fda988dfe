"""A stand-in for the Hugging Face hub on a loopback port: the few endpoints ``easel pull`` uses.

It serves repositories from local directories in the hub's own layout:
``GET /api/models/{repo}/revision/{rev}`` (the file list with sizes, git
blob ids and LFS SHA-256s, as ``model_info(files_metadata=True)`` reads it)
and ``GET /{repo}/resolve/{rev}/{path}`` with HTTP Range support. It
records every request, and can stall a file part-way (to interrupt a pull),
drop the connection part-way through a file a set number of times (to make
the pull retry), serve a file with one byte flipped (to fail its checksum),
list a file as stored in Xet (no LFS SHA-256, a blob id that is not the
bytes'), or gate a repository behind a token (401 without it).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class HubRequest:
    path: str
    range: str | None


@dataclass
class FakeHub:
    repos: dict[str, Path]  # repo id -> directory
    stall_after: dict[str, int] = field(default_factory=dict)  # "repo/file" -> the byte every answer stalls at
    drops: dict[str, list[int]] = field(default_factory=dict)  # "repo/file" -> bytes sent on each dropped answer
    corrupt: set[str] = field(default_factory=set)  # "repo/file" served with its first byte flipped
    xet: set[str] = field(default_factory=set)  # "repo/file" listed without LFS metadata, as Xet files may be
    gated: dict[str, str] = field(default_factory=dict)  # repo -> the token it takes
    requests: list[HubRequest] = field(default_factory=list)
    stalled: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def commit(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    def files(self, repo: str) -> dict[str, Path]:
        root = self.repos[repo]
        return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}

    def sibling(self, repo: str, name: str, path: Path) -> dict:
        data = path.read_bytes()
        item = {
            "rfilename": name,
            "size": len(data),
            "blobId": hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest(),
        }
        if f"{repo}/{name}" in self.xet:  # the blob id of a pointer file, not of these bytes
            item["blobId"] = hashlib.sha1(b"xet pointer " + name.encode()).hexdigest()
        elif name.endswith(LFS_SUFFIXES):
            item["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
        return item

    def content(self, repo: str, name: str) -> bytes | None:
        path = self.files(repo).get(name)
        if path is None:
            return None
        data = path.read_bytes()
        if f"{repo}/{name}" in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    def start(self) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def gets(self, repo: str, name: str) -> list[HubRequest]:
        return [r for r in self.requests if r.path.endswith(f"/{repo}/resolve/{self.commit(repo)}/{name}")]


_INFO = re.compile(r"/api/models/([^/]+/[^/]+)/revision/([^/?]+)")
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            hub.requests.append(HubRequest(path, self.headers.get("Range")))
            repo = next((repo for repo in hub.gated if path.startswith((f"/api/models/{repo}/", f"/{repo}/"))), None)
            if repo is not None and self.headers.get("Authorization") != f"Bearer {hub.gated[repo]}":
                body = b'{"error": "Access to model is restricted. You must have access to it and be authenticated."}'
                self._send(401, body, "application/json", {"X-Error-Code": "GatedRepo"})
            elif match := _INFO.fullmatch(path):
                self._info(match.group(1))
            elif (match := _RESOLVE.fullmatch(path)) and match.group(1) in hub.repos:
                self._file(match.group(1), match.group(3))
            else:
                self._send(404, b'{"error": "not found"}', "application/json")

        def _info(self, repo: str) -> None:
            if repo not in hub.repos:
                self._send(
                    404, b'{"error": "Repository not found"}', "application/json", {"X-Error-Code": "RepoNotFound"}
                )
                return
            siblings = [hub.sibling(repo, name, p) for name, p in hub.files(repo).items()]
            body = json.dumps({"id": repo, "sha": hub.commit(repo), "siblings": siblings}).encode()
            self._send(200, body, "application/json")

        def _file(self, repo: str, name: str) -> None:
            data = hub.content(repo, name)
            if data is None:
                self._send(404, b'{"error": "Entry not found"}', "application/json", {"X-Error-Code": "EntryNotFound"})
                return
            start = 0
            if match := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or ""):
                start = int(match.group(1))
            status, headers = (
                (206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}) if start else (200, {})
            )
            key = f"{repo}/{name}"
            if key in hub.stall_after and not hub.release.is_set():
                self._stall(status, data, start, hub.stall_after[key], headers)
                return
            if hub.drops.get(key):
                self._drop(status, data[start:], hub.drops[key].pop(0), headers)
                return
            self._send(status, data[start:], "application/octet-stream", headers)

        def _drop(self, status: int, body: bytes, sent: int, headers: dict) -> None:
            """Promise the whole body, send ``sent`` bytes of it, then close the connection (a dropped transfer)."""
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body[:sent])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def _stall(self, status: int, data: bytes, start: int, stop: int, headers: dict) -> None:
            """Send the file from ``start`` up to byte ``stop``, then hang until released (a dead connection).

            Every answer stalls there, a retry's too: a client whose read times out before the test
            interrupts it (a loaded machine) finds the hub as dead as before, and gets no further."""
            self.send_response(status)
            self.send_header("Content-Length", str(len(data) - start))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data[start : max(start, stop)])
            self.wfile.flush()
            hub.stalled.set()
            hub.release.wait()  # until the test or the hub's stop releases it: no timing to outlast
            self.close_connection = True

        def _send(self, status: int, body: bytes, kind: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Repo-Commit", "0" * 40)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
