"""Forgetting a data subject over HTTP (admins only): its data keys are deleted, its
personal fields read as redacted from then on, and the erasure is audited and logged for
restores (esmongo.ops.erasures)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from esmongo.api.auth import Principal, Role
from esmongo.api.context import ReasonHeader, ServicesDep, actor, require
from esmongo.api.errors import ApiError
from esmongo.api.models import ERRORS
from esmongo.errors import UnknownSubjectError
from esmongo.ops.erasures import forget

router = APIRouter(tags=["erasures"], responses=ERRORS)


class Erasure(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(
        min_length=1,
        max_length=300,
        pattern=r"^\S+$",
        description="user:<userId> (a person: their names and request metadata), or "
        "<aggregateType>/<aggregateId> (a stream's own personal fields).",
    )


@router.post("/erasures", response_model=dict[str, Any])
async def forget_subject(
    body: Erasure,
    svc: ServicesDep,
    who: Annotated[Principal, require(Role.ADMIN)],
    reason: ReasonHeader = None,
) -> dict[str, Any]:
    """Delete the subject's data keys. Forgetting again answers `already: true`."""
    try:
        done = await forget(
            svc.bank.store, body.subject, actor(who), reason=reason, log=svc.erasure_log
        )
    except UnknownSubjectError as exc:
        raise ApiError(404, exc.code, str(exc)) from exc
    for repository in svc.bank.repositories.values():  # aggregates loaded in clear
        if repository.cache is not None:
            repository.cache.clear()
    return {
        "subject": done.erasure.subject,
        "keysDeleted": len(done.erasure.keys),
        "already": done.erasure.already,
        "auditSequence": done.audit_sequence,
        "snapshotsDropped": done.streams,
    }
