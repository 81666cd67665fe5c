"""Schemas: event types, versions, JSON Schemas, upcaster chains, and what the check of
stored versions (`esmongo schemas check`) found at startup."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from esmongo.console.access import ViewerDep
from esmongo.console.render import page

router = APIRouter()


@router.get("/ui/schemas", response_class=HTMLResponse)
async def schemas_page(request: Request, viewer: ViewerDep) -> Response:
    store = viewer.svc.bank.store
    entries = []
    for schema in store.registry:
        steps = store.upcasters.path(schema.event_type, schema.version)
        chain = None if steps is None else [schema.version] + [s.to_version for s in steps]
        entries.append((schema, chain))
    return page(
        request,
        "schemas.html",
        viewer,
        title="Schemas",
        entries=entries,
        problems=viewer.svc.schema_problems,
    )
