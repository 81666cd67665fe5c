"""Event metadata from the HTTP request: who, from where, and which trace it belongs to."""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.requests import Request

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
