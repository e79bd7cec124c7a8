"""Request context (request id, structured access log, latency metric) and body size limits.

Both are plain ASGI middleware, so they see every request, including ones that fail before a
route runs. The access log is one JSON line per request: method, route template (not the raw
path, which would carry ids), status, duration, request id, and the principal's kind and token
id. Headers, bodies, cookies and query strings are never logged, so no token or secret can leak
through the log.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.http.metrics import Metrics

log = logging.getLogger("ledger.http.access")

REQUEST_ID_HEADER = b"x-request-id"
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Bodies: POST /v1/usage takes batches (see routes_usage); every other body is small.
USAGE_PATH = "/v1/usage"
USAGE_BODY_BYTES_MAX = 4 * 1024 * 1024
BODY_BYTES_MAX = 64 * 1024


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.request_seconds.labels(scope["method"], route, str(status)).observe(
                elapsed)
            principal = scope.get("state", {}).get("principal")
            log.info(json.dumps({
                "event": "http_request", "request_id": request_id, "method": scope["method"],
                "route": route, "status": status, "duration_ms": round(elapsed * 1000, 3),
                "principal": (f"{principal.kind.value}:{principal.token_id}"
                              if principal is not None else None),
            }))


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER:
            given: str = value.decode("latin-1")
            if REQUEST_ID_PATTERN.match(given):
                return given
    return uuid.uuid4().hex


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class BodyLimitMiddleware:
    """Refuse bodies over the limit with a 413 problem, before any of it is parsed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = USAGE_BODY_BYTES_MAX if scope["path"] == USAGE_PATH else BODY_BYTES_MAX
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = limit + 1
                if declared > limit:
                    await _too_large(scope, send, limit)
                    return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise BodyTooLargeError(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLargeError:
            if refused:
                await _too_large(scope, send, limit)
            else:
                raise


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body over {limit} bytes")
        self.limit = limit


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    from adapters.http.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE

    body = json.dumps({
        "type": PROBLEM_TYPE_BASE + "body_too_large", "title": "Body too large", "status": 413,
        "code": "body_too_large", "instance": scope["path"],
        "detail": f"the body is over {limit} bytes; send less (split usage into several "
                  "batches)",
    }).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
