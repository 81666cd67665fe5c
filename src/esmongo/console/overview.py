"""The overview: head, events per second, projections and their lag, dead letters, storage;
live through server-sent events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from esmongo.console.access import ViewerDep
from esmongo.console.charts import polyline
from esmongo.console.figures import RateSampler, figures
from esmongo.console.render import page
from esmongo.console.sse import frame, stream
from esmongo.ops.audit import Action

router = APIRouter()
LIVE_EVERY_S = 1.0


def sampler(request: Request, viewer: ViewerDep) -> RateSampler:
    """One per application: every overview shares the samples."""
    state = request.app.state
    if getattr(state, "console_rates", None) is None:
        state.console_rates = RateSampler(viewer.svc)
    return state.console_rates  # type: ignore[no-any-return]


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, viewer: ViewerDep) -> Response:
    shown = await figures(viewer.svc, sampler(request, viewer)) if viewer.staff else None
    recent = [Action.of(e) for e in await viewer.svc.audit.recent(10)] if viewer.staff else []
    return page(
        request,
        "overview.html",
        viewer,
        title="Overview",
        figures=shown,
        sparkline=polyline(shown.rates) if shown else None,
        recent=recent,
    )


@router.get("/ui/overview/events")
async def overview_events(request: Request, viewer: ViewerDep) -> Response:
    """The overview's figures once a second, for as long as the page is open."""

    rates = sampler(request, viewer)

    async def frames() -> AsyncIterator[str]:
        while True:
            if viewer.staff:
                shown = await figures(viewer.svc, rates)
                data = shown.to_dict()
                data["sparkline"] = polyline(shown.rates).points
                yield frame(data, event="figures")
            await asyncio.sleep(LIVE_EVERY_S)

    return stream(request, frames())
