"""``GET /``: the playground, one static page that uses the API from the browser (no key needed to load it).

The page is self-contained: inline style and script, no external resources.
Its Content-Security-Policy allows exactly its own inline blocks (by hash)
and requests to this server, so the browser itself refuses anything else.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

PAGE = Path(__file__).resolve().parents[1] / "static" / "playground.html"


def _hashes(html: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks)


@functools.cache
def page() -> tuple[bytes, dict[str, str]]:
    html = PAGE.read_text(encoding="utf-8")
    policy = (
        f"default-src 'none'; script-src {_hashes(html, 'script')}; style-src {_hashes(html, 'style')}; "
        "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = {"content-security-policy": policy, "x-content-type-options": "nosniff", "cache-control": "no-cache"}
    return html.encode("utf-8"), headers


async def playground(request: Request) -> HTMLResponse:
    body, headers = page()
    return HTMLResponse(body, headers=headers)


routes = [Route("/", playground, methods=["GET", "HEAD"])]
