"""Every error the API returns: a status and a JSON body saying what was wrong.

Body: {"error": {"code": "...", "message": "...", "details": [...]}}. Bad input is a 4xx,
never a 500. Error bodies are bounded (MAX_DETAILS details, texts cut at MAX_TEXT): a request
with thousands of bad fields must not be answered with megabytes.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from esmongo import AggregateNotFoundError, ConcurrencyError, DomainError, EventValidationError
from esmongo.errors import EventsCollectionSealed, MasterKeyError, StreamArchived

log = logging.getLogger(__name__)

# Rule violations that mean "the input itself is wrong" (422); the rest conflict with the
# account's current state (409).
UNPROCESSABLE = {
    "invalid_amount",
    "invalid_currency",
    "invalid_owner",
    "invalid_transaction_id",
    "same_account",
    "currency_mismatch",
}
NOT_FOUND = {"account_not_found"}
MAX_DETAILS = 20
MAX_TEXT = 200


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """`text`, cut to `limit` characters with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def body(code: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": clip(message, 4 * MAX_TEXT)}
    if details:
        error["details"] = details[:MAX_DETAILS]
        if len(details) > MAX_DETAILS:
            error["message"] += f" (first {MAX_DETAILS} of {len(details)} problems listed)"
    return {"error": error}


def domain_status(code: str) -> int:
    if code in NOT_FOUND:
        return 404
    return 422 if code in UNPROCESSABLE else 409


def to_api_error(exc: Exception) -> ApiError:
    """The API error for a library error (a command result's `error`)."""
    if isinstance(exc, DomainError):
        return ApiError(domain_status(exc.code), exc.code, str(exc))
    if isinstance(exc, AggregateNotFoundError):
        return ApiError(404, "account_not_found", str(exc))
    if isinstance(exc, StreamArchived):
        return ApiError(409, exc.code, str(exc))
    if isinstance(exc, EventsCollectionSealed):  # paused by a switch, or a stale process
        return ApiError(503, exc.code, str(exc))
    if isinstance(exc, ConcurrencyError):
        return ApiError(409, "concurrency_conflict", str(exc))
    if isinstance(exc, EventValidationError):
        details = [{"path": v.path, "rule": v.rule, "message": v.message} for v in exc.violations]
        return ApiError(422, "invalid_event", str(exc), details)
    raise exc


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(EventsCollectionSealed)
    async def paused(request: Request, exc: EventsCollectionSealed) -> JSONResponse:
        """Writes paused by a migration switch: nothing was written or stored; retry."""
        return JSONResponse(body(exc.code, str(exc)), status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(MasterKeyError)
    async def master_key(request: Request, exc: MasterKeyError) -> JSONResponse:
        """Personal data cannot be encrypted or read as this service is configured."""
        return JSONResponse(body(exc.code, str(exc)), status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        details = [
            {
                "field": clip(".".join(str(p) for p in e.get("loc", ()))),
                "message": clip(str(e.get("msg", ""))),
                "type": clip(str(e.get("type", ""))),
            }
            for e in errors[:MAX_DETAILS]
        ]
        fields = ", ".join(d["field"] for d in details[:5])
        more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
        content = body("invalid_request", f"invalid request: {fields}{more}", details)
        if len(errors) > MAX_DETAILS:
            content["error"]["message"] += f" (first {MAX_DETAILS} listed)"
        return JSONResponse(content, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            body(code, clip(str(exc.detail))), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(
            body("internal_error", "an unexpected error occurred; it has been logged"),
            status_code=500,
        )
