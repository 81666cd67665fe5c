"""API keys over HTTP: list, create, rotate, revoke (admins; auditors may list).

Not idempotent by `Idempotency-Key`: a stored response would hold a key in clear. Every
change is recorded in the audit trail (esmongo.ops.audit) with who made it and why.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from esmongo.api.auth import KeyInfo, KeyNotFound, Principal, Role
from esmongo.api.context import ReasonHeader, ServicesDep, actor, require
from esmongo.api.errors import ApiError
from esmongo.api.models import ERRORS, Identifier

router = APIRouter(tags=["keys"], responses=ERRORS)
ADMINS = (Role.ADMIN,)
OBSERVERS = (Role.ADMIN, Role.AUDITOR)
Prefix = Annotated[str, Path(pattern=r"^esk_[A-Za-z0-9_-]{8}$", description="A key's prefix.")]
MAX_SECONDS = 10 * 365 * 24 * 3600


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    userId: Identifier
    userName: str | None = Field(default=None, min_length=1, max_length=100)
    expiresInSeconds: int | None = Field(default=None, ge=1, le=MAX_SECONDS)
    rateLimit: float | None = Field(default=None, gt=0, le=1_000_000)


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    graceSeconds: int = Field(ge=1, le=MAX_SECONDS, description="How long the old key works on.")
    expiresInSeconds: int | None = Field(default=None, ge=1, le=MAX_SECONDS)


def _seconds(value: int | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None


def _info(key: KeyInfo) -> dict[str, Any]:
    def at(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "prefix": key.prefix,
        "role": str(key.role),
        "userId": key.user_id,
        "userName": key.user_name,
        "createdAt": at(key.created_at),
        "expiresAt": at(key.expires_at),
        "revokedAt": at(key.revoked_at),
        "lastUsedAt": at(key.last_used_at),
        "rateLimit": key.rate_limit,
        "rotatedTo": key.rotated_to,
    }


@router.get("/keys", response_model=list[dict[str, Any]])
async def list_keys(
    svc: ServicesDep,
    who: Annotated[Principal, require(*OBSERVERS)],
    all: bool = False,
) -> list[dict[str, Any]]:
    """Keys by prefix (never the keys): usable ones, or `all=true` with expired and revoked."""
    return [_info(k) for k in await svc.keys.list(include_unusable=all)]


@router.post("/keys", status_code=201, response_model=dict[str, Any])
async def create_key(
    body: NewKey,
    svc: ServicesDep,
    who: Annotated[Principal, require(*ADMINS)],
    reason: ReasonHeader = None,
) -> dict[str, Any]:
    """A new key, shown in this response only."""
    key = await svc.keys.create(
        body.role,
        body.userId,
        body.userName,
        expires_in=_seconds(body.expiresInSeconds),
        rate_limit=body.rateLimit,
    )
    details = {"prefix": key[:12], "role": str(body.role), "userId": body.userId}
    await svc.audit.record("ApiKeyCreated", actor(who), reason=reason, details=details)
    return {"key": key, "prefix": key[:12]}


@router.post("/keys/{prefix}/rotate", response_model=dict[str, Any])
async def rotate_key(
    prefix: Prefix,
    body: Rotation,
    svc: ServicesDep,
    who: Annotated[Principal, require(*ADMINS)],
    reason: ReasonHeader = None,
) -> dict[str, Any]:
    """A new key for the same user; the old one works for `graceSeconds` more."""
    try:
        key = await svc.keys.rotate(
            prefix,
            grace=timedelta(seconds=body.graceSeconds),
            expires_in=_seconds(body.expiresInSeconds),
        )
    except KeyNotFound as exc:
        raise ApiError(404, "key_not_found", str(exc)) from exc
    details = {"prefix": prefix, "newPrefix": key[:12], "graceSeconds": body.graceSeconds}
    await svc.audit.record("ApiKeyRotated", actor(who), reason=reason, details=details)
    return {"key": key, "prefix": key[:12], "replaces": prefix}


@router.post("/keys/{prefix}/revoke", response_model=dict[str, Any])
async def revoke_key(
    prefix: Prefix,
    svc: ServicesDep,
    who: Annotated[Principal, require(*ADMINS)],
    reason: ReasonHeader = None,
) -> dict[str, Any]:
    """Refuse the key from now on, in every service process within a second."""
    if not await svc.keys.revoke(prefix):
        raise ApiError(404, "key_not_found", f"no unrevoked API key with prefix {prefix!r}")
    await svc.audit.record("ApiKeyRevoked", actor(who), reason=reason, details={"prefix": prefix})
    return {"prefix": prefix, "revoked": True}
