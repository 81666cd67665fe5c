"""The FastAPI application: wiring, lifespan, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pymongo
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.api import commands, erasures, errors, keys, operations, queries, temporal
from esmongo.api.auth import ApiKeys
from esmongo.api.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimit
from esmongo.api.context import Services
from esmongo.api.idempotency import IdempotencyKeys
from esmongo.api.metadata import Correlate
from esmongo.bank import Bank
from esmongo.connect.connection import Connection, Settings
from esmongo.ops.audit import AuditTrail
from esmongo.ops.schema_check import unreachable_versions
from esmongo.projections import ProjectionDaemon

log = logging.getLogger(__name__)
READY_TIMEOUT_S = 2.0

Starter = Callable[[Services], Awaitable[Callable[[], Awaitable[None]]]]
"""Starts background work (the projection daemon) and returns how to stop it."""


async def build_services(
    db: AsyncDatabase[dict[str, Any]],
    *,
    rate_limit: float | None = None,
    inline: str | None = None,
) -> Services:
    bank = await Bank(db, inline=inline).init()
    api_keys = ApiKeys(db)
    await api_keys.init()
    idempotency = IdempotencyKeys(db)
    await idempotency.init()
    return Services(
        bank=bank,
        keys=api_keys,
        idempotency=idempotency,
        audit=AuditTrail(bank.store),
        projection_defs=bank.projections,
        rate_limit=rate_limit,
    )


async def run_projection_daemon(svc: Services) -> Callable[[], Awaitable[None]]:
    """The bank's projections in this process, in the background (`esmongo serve`)."""
    daemon = ProjectionDaemon(svc.bank.store, svc.projection_defs)
    daemon.start()
    svc.projections = daemon
    return daemon.stop


async def report_unreachable_versions(svc: Services) -> None:
    """At startup: stored event versions that upcasting cannot bring to the latest schema.

    In the background (it reads every event once) and logged, like `esmongo schemas check`.
    """
    try:
        problems = await unreachable_versions(svc.bank.store)
    except Exception:
        log.exception("the startup check of stored event versions failed")
        return
    svc.schema_problems = [str(problem) for problem in problems]
    for problem in problems:
        log.warning("schema check: %s", problem)
    if not problems:
        log.info("schema check: every stored event version upcasts to its latest schema")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    *,
    settings: Settings | None = None,
    db: AsyncDatabase[dict[str, Any]] | None = None,
    background: Starter | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    rate_limit: float | None = None,
    inline: str | None = None,
) -> FastAPI:
    """The service on `db` (tests) or on the database `settings` name (opened at startup).

    Request bodies over `max_body_bytes` are refused with a 413 before they are parsed.
    `rate_limit`: requests per second per API key and process, for keys that set none
    (429 with Retry-After beyond it); None: unlimited. `inline`: read models updated in the
    commands' transactions, comma-separated (None: $ESMONGO_INLINE_PROJECTIONS).
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be at least 1, not {max_body_bytes}")
    if rate_limit is not None and not rate_limit > 0:
        raise ValueError(f"rate_limit must be a positive number, not {rate_limit}")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            database = db
            if database is None:
                conn = await stack.enter_async_context(Connection(settings))
                database = conn.db
            svc = await build_services(database, rate_limit=rate_limit, inline=inline)
            if settings is not None:
                svc.erasure_log = settings.erasure_log
            app.state.services = svc
            stack.push_async_callback(svc.bank.close)  # last: after what still writes
            check = asyncio.create_task(report_unreachable_versions(svc), name="schemas-check")
            stack.push_async_callback(_cancel, check)
            if background is not None:
                stop = await background(svc)
                stack.push_async_callback(stop)
            yield

    app = FastAPI(
        title="esmongo bank",
        version="0.1.0",
        description="Accounts on an event store: commands append events, queries read "
        "projections and the event log. Authenticate with `Authorization: Bearer <API key>`.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(Correlate)  # added last: outside BodyLimit, so a 413 is correlated

    app.include_router(commands.router)
    app.include_router(queries.router)
    app.include_router(temporal.router)
    app.include_router(operations.router)
    app.include_router(keys.router)
    app.include_router(erasures.router)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"model": dict[str, Any]}})
    async def readyz(request: Request) -> JSONResponse:
        """The database answers and the projections run."""
        svc: Services = request.app.state.services
        checks: dict[str, Any] = {}
        try:
            # Bounded: a probe must answer before its own timeout, not after the driver's 30 s.
            with pymongo.timeout(READY_TIMEOUT_S):
                await svc.bank.db.command("ping")
            checks["database"] = "ok"
        except Exception as exc:  # reported, not raised: this is a health check
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if svc.projections is not None:
            checks["projections"] = "running" if svc.projections.running else "stopped"
            if svc.projections.running and checks["database"] != "ok":
                checks["projections"] = "stalled: the database is unreachable"
        ready = checks["database"] == "ok" and checks.get("projections", "running") == "running"
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (see docs/operations.md)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
