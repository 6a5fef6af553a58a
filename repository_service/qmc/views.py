"""`GET /qmc/license`: the Site license panel (SPEC 4.9, 8.27).

The page is one self-contained file (`license.html`: markup, style and script, no external
assets). It is served without auth; its API calls carry the caller's bearer token. The
Content-Security-Policy allows only the page's own inline script and style, by hash, so no
injected markup can run, and its only network access is fetch to this origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from aiohttp import web

from repository_service.qmc.models import HtmlPage
from shared.web.endpoints import Endpoint

PAGE_FILE = Path(__file__).with_name("license.html")
TAGS = ("qmc",)


def _hashes(html: str, tag: str) -> str:
    """Return the CSP hash sources of every inline `<tag>` element of the page."""
    markup = re.sub(r"<!--.*?-->", "", html, flags=re.DOTALL)
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", markup, flags=re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
        for body in bodies
    )


def content_security_policy(html: str) -> str:
    """Return the page's policy: nothing but its own hashed script and style, fetch to self."""
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {_hashes(html, 'script')}",
            f"style-src {_hashes(html, 'style')}",
            "connect-src 'self'",
            "img-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
        )
    )


_HTML = PAGE_FILE.read_text(encoding="utf-8")
_BODY = _HTML.encode()
HEADERS = {
    "Content-Security-Policy": content_security_policy(_HTML),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


async def license_page(request: web.Request) -> web.Response:
    """Serve the Site license panel (no auth: the page asks for a token)."""
    return web.Response(body=_BODY, content_type="text/html", charset="utf-8", headers=HEADERS)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/qmc/license",
        license_page,
        "The Site license admin page",
        response=HtmlPage,
        response_media_type="text/html",
        tags=TAGS,
    ),
]
