"""Who is looking: the session's principal, CSRF checks, and the roles' limits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request

from esmongo.api.auth import Principal, Role
from esmongo.api.context import Services, services
from esmongo.console.sessions import COOKIE, Session, Sessions

OPERATORS = (Role.ADMIN,)


class LoginRequired(Exception):
    """No live session: the handler sends the browser to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Refused(Exception):
    """A console request that must not run: shown as a page with the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Viewer:
    """The logged-in principal of a request, its session and the services."""

    who: Principal
    session: Session
    svc: Services

    @property
    def operates(self) -> bool:
        """May take actions (rebuild, retry, discard): the API's operators."""
        return self.who.role in OPERATORS

    @property
    def staff(self) -> bool:
        return self.who.role != Role.CUSTOMER

    async def may_see_account(self, account_id: str) -> bool:
        if self.who.sees_all_accounts():
            return True
        return await self.svc.bank.queries.owner(account_id) == self.who.user_id

    async def may_see_stream(self, aggregate_type: str, aggregate_id: str) -> bool:
        if self.who.sees_all_accounts():
            return True
        return aggregate_type == "account" and await self.may_see_account(aggregate_id)


def sessions(request: Request) -> Sessions:
    return request.app.state.console_sessions  # type: ignore[no-any-return]


def _next_path(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return quote(request.url.path + query, safe="/")  # one query value, whole


async def viewer(request: Request) -> Viewer:
    session = sessions(request).get(request.cookies.get(COOKIE))
    if session is None:
        raise LoginRequired(_next_path(request))
    svc = await services(request)
    who = await svc.keys.verify(session.key)
    if who is None:  # revoked since the login
        sessions(request).close(session.id)
        raise LoginRequired(_next_path(request))
    return Viewer(who, session, svc)


ViewerDep = Annotated[Viewer, Depends(viewer)]


def check_csrf(session: Session, token: str | None) -> None:
    if not token or not secrets.compare_digest(token, session.csrf):
        raise Refused(403, "refused: the form's CSRF token is missing or wrong; reload the page")


async def operator(request: Request, who: ViewerDep) -> Viewer:
    """A POST that changes something: a valid CSRF token and an operator's role."""
    form = await request.form()
    token = form.get("csrf")
    check_csrf(who.session, token if isinstance(token, str) else None)
    if not who.operates:
        raise Refused(403, f"refused: role {who.who.role} may not take actions")
    return who


OperatorDep = Annotated[Viewer, Depends(operator)]
