"""What the routes share: the bank, keys, idempotency records, and the caller."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi import Path as PathParameter
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from esmongo.api.auth import ApiKeys, Principal, Role
from esmongo.api.errors import ApiError
from esmongo.api.idempotency import IdempotencyKeys
from esmongo.api.models import ID_PATTERN
from esmongo.api.rate_limit import RateLimiter, retry_after
from esmongo.bank import Bank
from esmongo.connect.connection import Settings
from esmongo.ops.audit import Actor, AuditTrail
from esmongo.projections import Projection, ProjectionDaemon


@dataclass
class Services:
    bank: Bank
    keys: ApiKeys
    idempotency: IdempotencyKeys
    audit: AuditTrail
    projections: ProjectionDaemon | None = None
    """The projection daemon, when this process runs one."""
    projection_defs: list[Projection] = field(default_factory=list)
    """The projections this service knows (status, rebuilds, dead-letter retries)."""
    rebuilds: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """Rebuilds and replays started here, by projection."""
    progress: dict[str, tuple[int, int]] = field(default_factory=dict)
    """(position, head) of each rebuild or replay started here, after its latest batch."""
    consistency_timeout_s: float = 5.0
    """How long `consistent=true` reads wait for the read model."""
    rate_limit: float | None = None
    """Requests per second per key and process, for keys that set none; None: unlimited."""
    limiter: RateLimiter = field(default_factory=RateLimiter)
    erasure_log: Path = field(default_factory=lambda: Settings.from_env().erasure_log)
    """Where `forget` logs erasures (esmongo.ops.erasures)."""
    schema_problems: list[str] | None = None
    """What the startup check of stored event versions found (None: not finished)."""


def services_of(request: Request) -> Services:
    """The services of the app serving `request` (set by its lifespan)."""
    return request.app.state.services  # type: ignore[no-any-return]


async def services(request: Request) -> Services:
    """Async: FastAPI runs a plain `def` dependency in its thread pool, a hop per request."""
    return services_of(request)


ServicesDep = Annotated[Services, Depends(services)]


async def authenticate(
    svc: Services, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller of a bearer API key, within its rate (401 or 429 otherwise)."""
    if credentials is None:
        raise ApiError(401, "unauthenticated", "missing header Authorization: Bearer <API key>")
    found = await svc.keys.verify(credentials.credentials.strip())
    if found is None:
        raise ApiError(401, "unauthenticated", "unknown, expired or revoked API key")
    rate = found.rate_limit if found.rate_limit is not None else svc.rate_limit
    if rate is not None:
        wait = svc.limiter.take(found.key_prefix, rate)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                f"key {found.key_prefix}... is limited to {rate:g} requests per second",
                headers={"Retry-After": retry_after(wait)},
            )
    return found


class RoleCheck(HTTPBearer):
    """The bearer scheme (as the OpenAPI document shows it) that also authenticates the key
    and lets only `roles` through (403 with the reason otherwise).

    One dependency where a bearer, a principal, a role check and the services were four:
    FastAPI solves every dependency on every request (with the body and parameters, 19% of
    the service's profile of a command before, 13% after; docs/benchmarks.md).
    """

    def __init__(self, roles: tuple[Role, ...]) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="An API key: `esmongo keys create`.",
        )
        self.roles = roles

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        who = await authenticate(services_of(request), await super().__call__(request))
        if who.role not in self.roles:
            allowed = ", ".join(str(r) for r in self.roles)
            raise ApiError(
                403, "forbidden", f"role {who.role} may not do this (allowed: {allowed})"
            )
        return who


def require(*roles: Role) -> Any:
    """A dependency that authenticates the caller and lets only these roles through."""
    return Depends(RoleCheck(roles))


AccountId = Annotated[str, PathParameter(pattern=ID_PATTERN)]
"""An account id in a route's path: what a body's ids accept too (models.Identifier)."""
READERS = (Role.ADMIN, Role.TELLER, Role.AUDITOR, Role.CUSTOMER)
"""Who may read an account: customers their own only (check_access)."""
STAFF_READERS = (Role.ADMIN, Role.TELLER, Role.AUDITOR)


async def check_access(svc: Services, who: Principal, account_id: str) -> None:
    """Customers only reach their own accounts; unknown accounts are 404 for everyone."""
    owner = await svc.bank.queries.owner(account_id)
    if owner is None:
        raise ApiError(404, "account_not_found", f"account {account_id} not found")
    if not who.sees_all_accounts() and owner != who.user_id:
        raise ApiError(403, "forbidden", f"account {account_id} belongs to another customer")


MAX_REASON = 200
ReasonHeader = Annotated[
    str | None,
    Header(
        alias="X-Audit-Reason",
        max_length=MAX_REASON,
        description="Why: recorded with the action in the audit trail.",
    ),
]


def actor(who: Principal, via: str = "api") -> Actor:
    """The audit trail's view of an API caller."""
    return Actor(who.user_id, who.user_name, via, role=str(who.role), key_prefix=who.key_prefix)
