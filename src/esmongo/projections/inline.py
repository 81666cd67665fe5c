"""Inline projections (Marten's inline lifecycle): read-model writes in the append's transaction.

A projection whose `lifecycle` is INLINE is registered with the store
(`register_inline`): while the counter says it is inline (esmongo.store.inline), every
append transaction runs its handlers on the batch's events, merges their writes per
document in sequence order (the WritePlan the async runner uses) and writes them before
the commit. A read after the append's return sees them. A handler that raises fails its
append (nothing of it is written; the rest of the batch commits): an inline projection
has no dead letters, the command is refused instead.

The async runner stays in charge of everything else. It catches up from its checkpoint
as for any projection; once it has reached the head it hands the projection over
(`hand_over`: in one transaction, the checkpoint is marked inline and the counter
switched, by compare-and-set on the counter's value, so an append in between makes it
try again later) and then only watches. While inline, the projection's position is the
counter's value (`Checkpoints.position`). Whoever takes it back (a rebuild or a reset
fencing the live runner, a runner configured async, an append from a process that does
not apply it) switches the counter off in a transaction and sets the checkpoint to the
last position applied (`take_back`): the runner goes on from there asynchronously, and
hands over again once caught up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Collection, Sequence

from pymongo.asynchronous.client_session import AsyncClientSession

from esmongo.errors import ConfigurationError
from esmongo.events import RecordedEvent, utc_now
from esmongo.projections.checkpoints import Checkpoints
from esmongo.projections.errors import CheckpointConflict
from esmongo.projections.projection import Lifecycle, Projection
from esmongo.projections.writes import WritePlan
from esmongo.store import DocumentWrite, EventStore, InlineHandlerFailed, InlineSwitch

log = logging.getLogger(__name__)

INLINE_ENV = "ESMONGO_INLINE_PROJECTIONS"
"""Comma-separated names of projections to run inline (`esmongo serve --inline`)."""

PAUSE_POINTS: dict[str, Callable[[], Awaitable[None]]] = {}
"""Test hooks: a coroutine run at a named step ("hand_over": the runner found itself at
the head and is about to switch the projection to inline; "taken_back": a projection was
just switched back to async), to make races deterministic."""


class InlineApplier:
    """A projection as the store's batch writer applies it (esmongo.store.InlineProjection)."""

    def __init__(self, projection: Projection) -> None:
        self.projection = projection
        self.name = projection.name
        self.event_types: Collection[str] = frozenset(projection.event_types)

    async def writes(self, appends: Sequence[Sequence[RecordedEvent]]) -> list[DocumentWrite]:
        plan = WritePlan()
        for index, events in enumerate(appends):
            for event in events:
                try:
                    plan.extend(await self.projection.apply(event))
                except Exception as exc:
                    raise InlineHandlerFailed(self.name, index, event, exc) from exc
        return [
            DocumentWrite(collection, operation)
            for collection, operations in plan.operations().items()
            for operation in operations
        ]


def inline_names(names: str | Collection[str] | None = None) -> frozenset[str]:
    """Names given, or from $ESMONGO_INLINE_PROJECTIONS (comma-separated)."""
    if names is None:
        names = os.environ.get(INLINE_ENV, "")
    if isinstance(names, str):
        names = [n for n in (part.strip() for part in names.split(",")) if n]
    return frozenset(names)


def configure_inline(
    projections: Sequence[Projection], names: str | Collection[str] | None = None
) -> list[Projection]:
    """Make the projections named (see inline_names) INLINE; the inline ones (those
    declared so included). ConfigurationError for a name matching none."""
    wanted = inline_names(names)
    known = {p.name for p in projections}
    unknown = sorted(wanted - known)
    if unknown:
        raise ConfigurationError(
            f"{INLINE_ENV}/--inline: no projection {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known)) or 'none'})"
        )
    for projection in projections:
        if projection.name in wanted:
            projection.lifecycle = Lifecycle.INLINE
    return [p for p in projections if p.lifecycle == Lifecycle.INLINE]


def register_inline(store: EventStore, projections: Sequence[Projection]) -> None:
    """Have the store apply the INLINE projections among these while they are inline."""
    for projection in projections:
        if projection.lifecycle == Lifecycle.INLINE:
            store.register_inline(InlineApplier(projection))


class _NotAtHead(Exception):
    """Aborts a hand-over: events were appended since the runner's last batch."""


async def hand_over(
    session: AsyncClientSession,
    checkpoints: Checkpoints,
    switch: InlineSwitch,
    projection: Projection,
    fence: int,
    position: int,
) -> bool:
    """Switch `projection` to inline at `position`, in one transaction with its
    checkpoint (compare-and-set on fence and position); False when the counter has moved
    past `position` (the runner catches up, and tries again)."""
    if (hook := PAUSE_POINTS.get("hand_over")) is not None:
        await hook()
    name = projection.name

    async def switch_over(session: AsyncClientSession) -> None:
        result = await checkpoints.collection.update_one(
            {"_id": name, "fence": fence, "position": position},
            {"$set": {"inline": True, "updatedAt": utc_now(), "blockedAt": None}},
            session=session,
        )
        if result.matched_count != 1:
            raise CheckpointConflict(name, fence, position)
        if not await switch.enable(name, projection.event_types, position, session):
            raise _NotAtHead()

    try:
        await session.with_transaction(switch_over)
    except _NotAtHead:
        return False
    log.info("projection %s: inline from position %d", name, position)
    return True


async def take_back(
    session: AsyncClientSession,
    checkpoints: Checkpoints,
    switch: InlineSwitch,
    name: str,
    fence: int,
    *,
    keep_inline: bool = False,
) -> tuple[int, bool] | None:
    """Settle an inline checkpoint under `fence`: (position, still inline), or None when
    the checkpoint is not inline. With `keep_inline`, a projection still inline stays so;
    otherwise the counter is switched off, and the checkpoint moves to where the read model
    is (the counter's value then, or where an append switched it off)."""
    found: list[tuple[int, bool] | None] = [None]

    async def settle(session: AsyncClientSession) -> None:
        checkpoint = await checkpoints.get(name, session)
        if checkpoint is None or not checkpoint.inline:
            found[0] = None
            return
        if checkpoint.fence != fence:
            raise CheckpointConflict(name, fence, checkpoint.position)
        state = await switch.state(name, session)
        if state.inline and keep_inline:
            found[0] = (state.head, True)
            return
        if state.inline:
            state = await switch.disable(name, session)
            position = state.head
        elif state.off_at is not None:
            await switch.disable(name, session)  # clears inlineOff
            position = state.off_at
        else:
            raise RuntimeError(
                f"projection {name}: the checkpoint says inline and the counter neither "
                "inline nor switched off; rebuild it"
            )
        result = await checkpoints.collection.update_one(
            {"_id": name, "fence": fence},
            {"$set": {"inline": False, "position": position, "updatedAt": utc_now()}},
            session=session,
        )
        if result.matched_count != 1:
            raise CheckpointConflict(name, fence, checkpoint.position)
        found[0] = (position, False)

    await session.with_transaction(settle)
    if found[0] is not None and not found[0][1]:
        log.info("projection %s: async again from position %d", name, found[0][0])
        if (hook := PAUSE_POINTS.get("taken_back")) is not None:
            await hook()
    return found[0]
