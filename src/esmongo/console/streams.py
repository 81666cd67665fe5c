"""Streams: find one by aggregate type and id, page through it by version, open an event."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from esmongo.console.access import Refused, Viewer, ViewerDep
from esmongo.console.render import page
from esmongo.events import RecordedEvent

router = APIRouter()
PAGE = 50
Name = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
EventId = Annotated[str, Path(min_length=1, max_length=200)]


async def _search(viewer: Viewer, kind: str, prefix: str, after: str) -> list[str]:
    """Accounts from their read model (one document each: fast at any history length,
    and customers get only theirs); other types from their streams' first events."""
    if kind == "account":
        owner = None if viewer.who.sees_all_accounts() else viewer.who.user_id
        found = await viewer.svc.bank.queries.accounts_page(
            owner=owner, after=after or None, id_prefix=prefix, limit=PAGE
        )
        ids = [str(doc["accountId"]) for doc in found.items]
        exact = (
            prefix and not after and prefix not in ids and await viewer.may_see_stream(kind, prefix)
        )
        if exact and await viewer.svc.bank.store.stream_version(kind, prefix):
            ids.insert(0, prefix)  # not projected yet, or the read model lags
        return ids
    if not viewer.who.sees_all_accounts():
        return []
    return await viewer.svc.bank.store.stream_ids(kind, prefix, after=after, limit=PAGE)


@router.get("/ui/streams", response_class=HTMLResponse)
async def search(
    request: Request,
    viewer: ViewerDep,
    type: Annotated[str, Query(max_length=64)] = "account",
    q: Annotated[str, Query(max_length=64)] = "",
    after: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    kinds = [a.aggregate_type for a in viewer.svc.bank.aggregates] if viewer.staff else []
    ids = await _search(viewer, type, q, after)
    return page(
        request,
        "streams.html",
        viewer,
        title="Streams",
        kinds=sorted({*kinds, "account", type}),
        type=type,
        q=q,
        ids=ids,
        next_after=ids[-1] if len(ids) == PAGE else None,
    )


async def _visible(viewer: Viewer, kind: str, ident: str) -> None:
    if not await viewer.may_see_stream(kind, ident):
        raise Refused(403, f"refused: the stream {kind}/{ident} is not yours to see")


@router.get("/ui/streams/{kind}/{ident}", response_class=HTMLResponse)
async def stream_page(
    request: Request,
    viewer: ViewerDep,
    kind: Name,
    ident: Name,
    start: Annotated[int, Query(alias="from", ge=1, le=2**62)] = 1,
) -> Response:
    """One page of versions [from, from+PAGE): an index range, whatever the stream's length."""
    await _visible(viewer, kind, ident)
    store = viewer.svc.bank.store
    version = await store.stream_version(kind, ident)
    end = start + PAGE - 1
    events = [e async for e in store.read_stream(kind, ident, start, end)]
    last_page = max(1, version - PAGE + 1)
    return page(
        request,
        "stream.html",
        viewer,
        title=f"{kind}/{ident}",
        kind=kind,
        ident=ident,
        version=version,
        events=events,
        start=start,
        previous=max(1, start - PAGE) if start > 1 else None,
        next=end + 1 if end < version else None,
        last=last_page if end < version else None,
    )


async def event_or_404(viewer: Viewer, event_id: str) -> RecordedEvent:
    event = await viewer.svc.bank.store.find_event(event_id)
    if event is None:
        raise Refused(404, f"no event {event_id}")
    await _visible(viewer, event.aggregate_type, event.aggregate_id)
    return event


@router.get("/ui/events/{event_id}", response_class=HTMLResponse)
async def event_page(request: Request, viewer: ViewerDep, event_id: EventId) -> Response:
    event = await event_or_404(viewer, event_id)
    store = viewer.svc.bank.store
    raw = await store.stored_document(event_id) or {}
    stored_version = str(raw.get("eventVersion", event.event_version))
    chain = [stored_version] + [
        step.to_version for step in store.upcasters.path(event.event_type, stored_version) or []
    ]
    return page(
        request,
        "event.html",
        viewer,
        title=f"{event.event_type} #{event.sequence}",
        event=event,
        raw=raw,
        chain=chain,
    )
