"""Event metadata from the HTTP request: who, from where, and which trace it belongs to."""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from esmongo.api.auth import Principal

CORRELATION_HEADER = "X-Correlation-Id"
CAUSATION_HEADER = "X-Causation-Id"
# W3C trace context: version-traceid-parentid-flags
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
HEADER_VALUE = re.compile(r"^[\w.:/@+=-]{1,128}$")


def correlation_id(request: Request) -> str:
    """The caller's correlation id when it is sane, else a new one (echoed in the response)."""
    given = request.headers.get(CORRELATION_HEADER, "")
    if HEADER_VALUE.match(given):
        return given
    return f"corr_{uuid.uuid4().hex}"


def event_metadata(request: Request, principal: Principal) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "userId": principal.user_id,
        "userName": principal.user_name,
        "source": "api",
        "ipAddress": request.client.host if request.client else None,
        "userAgent": request.headers.get("user-agent", "")[:300] or None,
        "correlationId": request.state.correlation_id,
    }
    causation = request.headers.get(CAUSATION_HEADER, "")
    if HEADER_VALUE.match(causation):
        meta["causationId"] = causation
    trace = TRACEPARENT.match(request.headers.get("traceparent", "").strip().lower())
    if trace and trace.group(1) != "0" * 32 and trace.group(2) != "0" * 16:
        meta["traceId"], meta["spanId"] = trace.group(1), trace.group(2)
    return {k: v for k, v in meta.items() if v is not None}


class Correlate:
    """ASGI middleware: `request.state.correlation_id` set (correlation_id), and echoed in
    the response header. Plain ASGI: starlette's `@app.middleware("http")` wraps every
    request in extra tasks and streams, a cost the profile of `esmongo serve` showed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = correlation_id(request)
        request.state.correlation_id = given

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers[CORRELATION_HEADER] = request.state.correlation_id
            await send(message)

        await self.app(scope, receive, send_with_header)
