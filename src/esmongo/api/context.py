"""What the routes share: the bank, keys, idempotency records, and the caller."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from esmongo.api.auth import ApiKeys, Principal, Role
from esmongo.api.errors import ApiError
from esmongo.api.idempotency import IdempotencyKeys
from esmongo.bank import Bank
from esmongo.projections import Projection, ProjectionDaemon


@dataclass
class Services:
    bank: Bank
    keys: ApiKeys
    idempotency: IdempotencyKeys
    projections: ProjectionDaemon | None = None
    """The projection daemon, when this process runs one."""
    projection_defs: list[Projection] = field(default_factory=list)
    """The projections this service knows (status, rebuilds, dead-letter retries)."""
    rebuilds: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    consistency_timeout_s: float = 5.0
    """How long `consistent=true` reads wait for the read model."""


async def services(request: Request) -> Services:
    """Async: FastAPI runs a plain `def` dependency in its thread pool, a hop per request."""
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(services)]


bearer = HTTPBearer(auto_error=False, description="An API key: `esmongo keys create`.")


async def principal(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None:
        raise ApiError(401, "unauthenticated", "missing header Authorization: Bearer <API key>")
    found = await svc.keys.verify(credentials.credentials.strip())
    if found is None:
        raise ApiError(401, "unauthenticated", "unknown or revoked API key")
    return found


PrincipalDep = Annotated[Principal, Depends(principal)]


def require(*roles: Role) -> Any:
    """A dependency that lets only these roles through (403 with the reason otherwise)."""

    async def check(who: PrincipalDep) -> Principal:
        if who.role not in roles:
            allowed = ", ".join(str(r) for r in roles)
            raise ApiError(
                403, "forbidden", f"role {who.role} may not do this (allowed: {allowed})"
            )
        return who

    return Depends(check)


async def check_access(svc: Services, who: Principal, account_id: str) -> None:
    """Customers only reach their own accounts; unknown accounts are 404 for everyone."""
    owner = await svc.bank.queries.owner(account_id)
    if owner is None:
        raise ApiError(404, "account_not_found", f"account {account_id} not found")
    if not who.sees_all_accounts() and owner != who.user_id:
        raise ApiError(403, "forbidden", f"account {account_id} belongs to another customer")
