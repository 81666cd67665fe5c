"""The causation trace of an event: every event of its correlation, as a tree."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from esmongo.console.access import ViewerDep
from esmongo.console.causation import causation_tree
from esmongo.console.render import page
from esmongo.console.streams import EventId, event_or_404

router = APIRouter()
MAX_EVENTS = 1000


@router.get("/ui/trace/{event_id}", response_class=HTMLResponse)
async def trace_page(request: Request, viewer: ViewerDep, event_id: EventId) -> Response:
    event = await event_or_404(viewer, event_id)
    store = viewer.svc.bank.store
    correlation = event.metadata.get("correlationId")
    events = [event]
    if isinstance(correlation, str) and correlation:
        events = [e async for e in store.read_by_correlation(correlation, limit=MAX_EVENTS + 1)]
    truncated = len(events) > MAX_EVENTS
    events = events[:MAX_EVENTS]
    shown = [e for e in events if await viewer.may_see_stream(e.aggregate_type, e.aggregate_id)]
    return page(
        request,
        "trace.html",
        viewer,
        title=f"Trace of {event.event_type} #{event.sequence}",
        event=event,
        correlation=correlation,
        roots=causation_tree(shown),
        hidden=len(events) - len(shown),
        truncated=truncated,
        streams=len({(e.aggregate_type, e.aggregate_id) for e in shown}),
    )
