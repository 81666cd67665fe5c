"""Logging in with an API key, and out."""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from esmongo.api.context import services
from esmongo.console.access import Refused, sessions
from esmongo.console.render import page
from esmongo.console.sessions import COOKIE

router = APIRouter()
LOGIN_COOKIE = "esmongo_login"
"""The login form's CSRF token (double submit): no session exists yet to hold it."""


def _safe_next(value: str | None) -> str:
    """Only a path on this site: `//host` or a scheme would send the user elsewhere."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


def _cookie(response: Response, request: Request, name: str, value: str, path: str) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=path,
    )


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None, failed: bool = False) -> Response:
    token = secrets.token_urlsafe(24)
    response = page(
        request,
        "login.html",
        None,
        title="Log in",
        login_token=token,
        next=_safe_next(next),
        failed=failed,
    )
    _cookie(response, request, LOGIN_COOKIE, token, "/login")
    return response


@router.post("/login")
async def login(
    request: Request,
    key: Annotated[str, Form(max_length=200)],
    token: Annotated[str, Form(max_length=100)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not secrets.compare_digest(token, expected):
        raise Refused(403, "refused: the login form expired or came from another site; reload")
    svc = await services(request)
    who = await svc.keys.verify(key.strip())
    if who is None:
        target = f"/login?failed=true&next={quote(_safe_next(next), safe='/')}"
        return RedirectResponse(target, status_code=303)
    session = sessions(request).open(key.strip())
    response = RedirectResponse(_safe_next(next), status_code=303)
    _cookie(response, request, COOKIE, session.id, "/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Needs no CSRF token: the worst a forged logout does is end a session."""
    sessions(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/login?notice=logged-out", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
