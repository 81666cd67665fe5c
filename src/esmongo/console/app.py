"""Mounting the console on the service: routes, static files, headers, error pages."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from esmongo.console import (
    dead_letters,
    login,
    overview,
    projections,
    schemas,
    streams,
    tail,
    timetravel,
    trace,
)
from esmongo.console.access import LoginRequired, Refused
from esmongo.console.headers import SecurityHeaders
from esmongo.console.render import HERE, page
from esmongo.console.sessions import Sessions

STATIC = "/ui/static"


def mount(app: FastAPI) -> None:
    """The console at `/` and `/ui/...`, beside the API's paths (which it leaves alone)."""
    app.state.console_sessions = Sessions()
    app.add_middleware(SecurityHeaders)
    app.mount(STATIC, StaticFiles(directory=HERE / "static"), name="console-static")
    for module in (
        login,
        overview,
        tail,
        streams,
        trace,
        timetravel,
        projections,
        dead_letters,
        schemas,
    ):
        app.include_router(module.router, include_in_schema=False)

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        if request.method != "GET" or request.url.path.endswith("/events"):
            return HTMLResponse("log in first", status_code=401)
        return RedirectResponse(f"/login?next={exc.next_path}", status_code=303)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return page(
            request, "refused.html", None, status=exc.status, title="Refused", message=exc.message
        )
