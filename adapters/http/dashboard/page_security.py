"""Security of the dashboard's pages: response headers and CSRF tokens.

Headers: every dashboard response carries a strict Content-Security-Policy (scripts, styles,
images and connections from this origin only; no inline script, no inline style, no frames, no
plugins, forms post only here), and the usual companions (no sniffing, no framing, no referrer
leaks, no caching of pages that show balances).

CSRF: the session cookie is HttpOnly and SameSite=Strict, which already keeps other sites'
forms from carrying it; every form also carries a token that the server checks on POST. The
token is an HMAC of the session cookie's value, so it differs per session, needs no storage,
and cannot be computed by a page that cannot read the cookie (none can: it is HttpOnly).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

CSRF_FIELD = "csrf_token"
CSRF_CONTEXT = b"ledger-dashboard-csrf-v1"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "font-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
])

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
# Pages show balances: no shared cache may keep them, and the back button after logout must not
# show them either.
NO_STORE = "no-store"


def csrf_token(session_value: str) -> str:
    return hmac.new(session_value.encode(), CSRF_CONTEXT, hashlib.sha256).hexdigest()


def csrf_valid(session_value: str, submitted: str | None) -> bool:
    if not submitted:
        return False
    return hmac.compare_digest(csrf_token(session_value), submitted)


class SecureHeadersRoute(APIRoute):
    """An APIRoute that adds the security headers to every response of its handler.

    Set on the dashboard's router (`route_class=`), so the API keeps its own headers and the
    dashboard's policy does not depend on how the app is assembled.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secure_handler(request: Request) -> Response:
            response = await handler(request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("Cache-Control", NO_STORE)
            return response

        return secure_handler
