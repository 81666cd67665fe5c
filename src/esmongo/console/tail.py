"""The live tail: the global feed as it commits, woken by the change stream, read by
sequence (what a reader can trust, as the projections do)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from esmongo.console.access import Viewer, ViewerDep
from esmongo.console.render import page, when
from esmongo.console.sse import KEEPALIVE, frame, stream
from esmongo.events import RecordedEvent

router = APIRouter()
BACKLOG = 50
BATCH = 200
TypeFilter = Annotated[str, Query(max_length=100)]
AggregateFilter = Annotated[str, Query(max_length=130)]


def matches(event: RecordedEvent, aggregate: str) -> bool:
    """`aggregate` is a type (`account`), an id (`acc_1`) or both (`account/acc_1`)."""
    if not aggregate:
        return True
    kind, _, ident = aggregate.rpartition("/")
    if kind:
        return event.aggregate_type == kind and event.aggregate_id == ident
    return aggregate in (event.aggregate_type, event.aggregate_id)


def row(event: RecordedEvent) -> dict[str, Any]:
    return {
        "sequence": event.sequence,
        "eventId": event.event_id,
        "eventType": event.event_type,
        "aggregateType": event.aggregate_type,
        "aggregateId": event.aggregate_id,
        "version": event.aggregate_version,
        "timestamp": when(event.timestamp),
        "data": event.data,
    }


async def visible(viewer: Viewer, events: list[RecordedEvent]) -> list[RecordedEvent]:
    if viewer.who.sees_all_accounts():
        return events
    return [e for e in events if await viewer.may_see_stream(e.aggregate_type, e.aggregate_id)]


@router.get("/ui/tail", response_class=HTMLResponse)
async def tail_page(
    request: Request, viewer: ViewerDep, type: TypeFilter = "", aggregate: AggregateFilter = ""
) -> Response:
    store = viewer.svc.bank.store
    head = await store.head_sequence()
    start = max(0, head - BACKLOG * 4)
    types = [type] if type else None
    recent = [e async for e in store.read_all(start, event_types=types, through=head)]
    recent = await visible(viewer, [e for e in recent if matches(e, aggregate)])
    return page(
        request,
        "tail.html",
        viewer,
        title="Live tail",
        events=list(reversed(recent[-BACKLOG:])),
        head=head,
        type=type,
        aggregate=aggregate,
    )


@router.get("/ui/tail/events")
async def tail_events(
    request: Request,
    viewer: ViewerDep,
    after: Annotated[int, Query(ge=0, le=2**62)],
    type: TypeFilter = "",
    aggregate: AggregateFilter = "",
) -> Response:
    """Events after `after`, then each new one as it commits."""
    store = viewer.svc.bank.store
    types = [type] if type else None

    async def frames() -> AsyncIterator[str]:
        position = after
        changes = await store.watch(types, max_await_ms=500)
        try:
            while True:
                head = await store.head_sequence()
                while position < head:
                    through = min(head, position + BATCH)
                    found = [
                        e
                        async for e in store.read_all(position, event_types=types, through=through)
                    ]
                    position = through
                    for event in await visible(viewer, [e for e in found if matches(e, aggregate)]):
                        yield frame(row(event), event="append", id=event.sequence)
                    yield frame({"position": position}, event="position")
                change = await changes.try_next()
                if change is None:
                    yield KEEPALIVE
        finally:
            await changes.close()

    return stream(request, frames())
