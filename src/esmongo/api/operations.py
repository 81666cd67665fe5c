"""Operations over HTTP: projection status and rebuilds, dead letters, the store check."""

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from esmongo.api.auth import Principal, Role
from esmongo.api.context import ReasonHeader, Services, ServicesDep, actor, require
from esmongo.api.errors import ApiError
from esmongo.api.idempotency import COLLECTION as IDEMPOTENCY_KEYS
from esmongo.api.models import ERRORS, plain
from esmongo.ops.check import check
from esmongo.projections import (
    DeadLetter,
    DeadLetterError,
    DeadLetters,
    Projection,
    projection_status,
    rebuild,
    replay,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"], responses=ERRORS)

OPERATORS = (Role.ADMIN,)
OBSERVERS = (Role.ADMIN, Role.AUDITOR)
DeadLetterId = Annotated[
    str,
    Path(pattern=r"^[A-Za-z0-9_.-]{1,64}:[0-9]{1,18}$", description="projection:sequence"),
]


def _projection(svc: Services, name: str) -> Projection:
    for projection in svc.projection_defs:
        if projection.name == name:
            return projection
    known = ", ".join(p.name for p in svc.projection_defs) or "none"
    raise ApiError(404, "projection_not_found", f"no projection {name!r} (known: {known})")


def _split(dead_letter_id: str) -> tuple[str, int]:
    name, _, sequence = dead_letter_id.rpartition(":")
    return name, int(sequence)


async def _dead_letters_holding(svc: Services, dead_letter_id: str) -> DeadLetters:
    """The dead letters, once this one is known to be there (else a 404)."""
    dead = DeadLetters(svc.bank.db)
    if await dead.get(*_split(dead_letter_id)) is None:
        raise ApiError(404, "dead_letter_not_found", f"no dead letter {dead_letter_id}")
    return dead


@router.get("/projections", response_model=list[dict[str, Any]])
async def projections(
    svc: ServicesDep, who: Annotated[Principal, require(*OBSERVERS)]
) -> list[dict[str, Any]]:
    """Each projection: checkpoint, lag in events and seconds, lease holder, dead letters."""
    names = [p.name for p in svc.projection_defs]
    statuses = await projection_status(svc.bank.store, names, update_metrics=True)
    result = []
    for status in statuses:
        item = plain(status.to_dict())
        item["rebuilding"], item["rebuildFailed"] = rebuild_state(svc, status.name)
        result.append(item)
    return result


def rebuild_state(svc: Services, name: str) -> tuple[bool, str | None]:
    """(running, why the last rebuild or replay failed): a rebuild runs after its request
    was answered, so its failure is only seen here, in the console and in the log."""
    task = svc.rebuilds.get(name)
    if task is None:
        return False, None
    if not task.done():
        return True, None
    if task.cancelled():
        return False, "cancelled"
    exc = task.exception()
    return False, None if exc is None else f"{type(exc).__name__}: {exc}"


ProjectionName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


async def start_rebuild(
    svc: Services,
    name: str,
    who: Principal,
    *,
    source: str,
    replay_in_place: bool = False,
    reason: str | None = None,
) -> None:
    """Start a blue/green rebuild (or a reset-and-replay) in the background, recorded in the
    audit trail with who asked and why. Shared by the API and the console."""
    projection = _projection(svc, name)
    action = "replay" if replay_in_place else "rebuild"
    running = svc.rebuilds.get(name)
    if running is not None and not running.done():
        raise ApiError(409, "rebuild_running", f"a rebuild of {name} is already running")
    kind = "ProjectionReplayed" if replay_in_place else "ProjectionRebuildStarted"
    await svc.audit.record(kind, actor(who, source), reason=reason, details={"projection": name})

    def progress(position: int, head: int) -> None:
        svc.progress[name] = (position, head)

    async def work() -> None:
        try:
            if replay_in_place:
                position = await replay(svc.bank.store, projection, progress=progress)
                log.info("replay of %s reached %s", name, position)
            else:
                result = await rebuild(svc.bank.store, projection, progress=progress)
                log.info("rebuild of %s swapped in: %s", name, result)
        except Exception:  # a refused privilege as much as a ProjectionError
            log.exception("%s of %s failed", action, name)
            raise  # kept on the task: rebuild_state reports it

    svc.progress[name] = (0, 0)
    svc.rebuilds[name] = asyncio.create_task(work(), name=f"{action}:{name}")


@router.post("/projections/{name}/rebuild", status_code=202, response_model=dict[str, Any])
async def rebuild_projection(
    name: ProjectionName,
    svc: ServicesDep,
    who: Annotated[Principal, require(*OPERATORS)],
    reason: ReasonHeader = None,
) -> dict[str, Any]:
    """Start a blue/green rebuild: the old read model serves reads until the swap."""
    await start_rebuild(svc, name, who, source="api", reason=reason)
    return {"projection": name, "rebuild": "started"}


@router.post("/projections/{name}/replay", status_code=202, response_model=dict[str, Any])
async def replay_projection(
    name: ProjectionName,
    svc: ServicesDep,
    who: Annotated[Principal, require(*OPERATORS)],
    reason: ReasonHeader = None,
) -> dict[str, Any]:
    """Empty the read model in place and replay every event (development: readers see it
    empty, then growing). Use rebuild in production."""
    await start_rebuild(svc, name, who, source="api", replay_in_place=True, reason=reason)
    return {"projection": name, "replay": "started"}


@router.get("/dead-letters", response_model=list[dict[str, Any]])
async def dead_letters(
    svc: ServicesDep,
    who: Annotated[Principal, require(*OBSERVERS)],
    projection: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[dict[str, Any]]:
    """Events a projection could not apply, oldest first, with the error and traceback."""
    letters = await DeadLetters(svc.bank.db).find(projection, limit=limit, skip=skip)
    return [_letter(letter) for letter in letters]


def _letter(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": f"{letter.projection}:{letter.sequence}",
        "projection": letter.projection,
        "sequence": letter.sequence,
        "eventId": letter.event_id,
        "eventType": letter.event_type,
        "aggregateType": letter.aggregate_type,
        "aggregateId": letter.aggregate_id,
        "error": letter.error,
        "errorType": letter.error_type,
        "traceback": letter.traceback,
        "attempts": letter.attempts,
        "firstFailureAt": letter.first_failure_at.isoformat(),
        "lastFailureAt": letter.last_failure_at.isoformat(),
        "policy": letter.policy,
    }


async def retry_letter(
    svc: Services, dead_letter_id: str, who: Principal, *, source: str, reason: str | None = None
) -> None:
    """Apply a dead letter's event again; once applied, recorded in the audit trail."""
    name, sequence = _split(dead_letter_id)
    projection = _projection(svc, name)
    dead = await _dead_letters_holding(svc, dead_letter_id)
    try:
        await dead.retry(svc.bank.store, projection, sequence)
    except DeadLetterError as exc:
        raise ApiError(409, "retry_failed", str(exc)) from exc
    details = {"projection": name, "sequence": sequence}
    await svc.audit.record("DeadLetterRetried", actor(who, source), reason=reason, details=details)


async def discard_letter(
    svc: Services, dead_letter_id: str, who: Principal, *, source: str, reason: str | None = None
) -> None:
    """Drop a dead letter without applying its event; recorded in the audit trail."""
    name, sequence = _split(dead_letter_id)
    dead = await _dead_letters_holding(svc, dead_letter_id)
    try:
        await dead.discard(name, sequence)
    except DeadLetterError as exc:
        raise ApiError(409, "discard_failed", str(exc)) from exc
    details = {"projection": name, "sequence": sequence}
    await svc.audit.record(
        "DeadLetterDiscarded", actor(who, source), reason=reason, details=details
    )


@router.post("/dead-letters/{dead_letter_id}/retry", response_model=dict[str, Any])
async def retry_dead_letter(
    dead_letter_id: DeadLetterId,
    svc: ServicesDep,
    who: Annotated[Principal, require(*OPERATORS)],
    reason: ReasonHeader = None,
) -> dict[str, Any]:
    """Apply the event through the projection again (after a fix); removed on success."""
    await retry_letter(svc, dead_letter_id, who, source="api", reason=reason)
    return {"id": dead_letter_id, "retried": True}


@router.delete("/dead-letters/{dead_letter_id}", response_model=dict[str, Any])
async def discard_dead_letter(
    dead_letter_id: DeadLetterId,
    svc: ServicesDep,
    who: Annotated[Principal, require(*OPERATORS)],
    reason: ReasonHeader = None,
) -> dict[str, Any]:
    """Drop a dead letter without applying its event."""
    await discard_letter(svc, dead_letter_id, who, source="api", reason=reason)
    return {"id": dead_letter_id, "discarded": True}


@router.get("/admin/check", response_model=dict[str, Any])
async def check_store(
    svc: ServicesDep, who: Annotated[Principal, require(*OPERATORS)]
) -> dict[str, Any]:
    """`esmongo check` over HTTP (read-only; repairs are the CLI's `--repair`): every
    invariant of the store, with what is wrong and where. Streams the whole log: slow on
    a large store."""
    report = await check(svc.bank.db, idempotency=[IDEMPOTENCY_KEYS])
    return report.to_dict()
