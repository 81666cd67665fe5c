"""Projections: status, lag, lease owner, rebuild and replay (with a confirmation),
progress of a rebuild started here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from esmongo.api.errors import ApiError
from esmongo.api.operations import start_rebuild
from esmongo.console.access import OperatorDep, Refused, ViewerDep
from esmongo.console.figures import figures
from esmongo.console.render import page

router = APIRouter()
ProjectionName = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
ACTIONS = ("rebuild", "replay")


def _staff_only(viewer: ViewerDep) -> None:
    if not viewer.staff:
        raise Refused(403, "refused: projections are for staff")


@router.get("/ui/projections", response_class=HTMLResponse)
async def projections_page(request: Request, viewer: ViewerDep) -> Response:
    _staff_only(viewer)
    shown = await figures(viewer.svc)
    return page(
        request,
        "projections.html",
        viewer,
        title="Projections",
        projections=shown.projections,
        progress=viewer.svc.progress,
    )


@router.get("/ui/projections/{name}/confirm", response_class=HTMLResponse)
async def confirm(
    request: Request,
    viewer: ViewerDep,
    name: ProjectionName,
    action: Annotated[str, Query(pattern="^(rebuild|replay)$")],
) -> Response:
    if not viewer.operates:
        raise Refused(403, f"refused: role {viewer.who.role} may not take actions")
    if name not in [p.name for p in viewer.svc.projection_defs]:
        raise Refused(404, f"no projection {name}")
    return page(
        request, "confirm.html", viewer, title=f"{action} {name}?", name=name, action=action
    )


@router.post("/ui/projections/{name}/{action}")
async def act(name: ProjectionName, action: str, viewer: OperatorDep) -> Response:
    if action not in ACTIONS:
        raise Refused(404, f"no action {action}")
    try:
        await start_rebuild(
            viewer.svc, name, viewer.who, source="console", replay_in_place=action == "replay"
        )
    except ApiError as exc:
        raise Refused(exc.status, exc.message) from None
    return RedirectResponse(f"/ui/projections?notice={action}", status_code=303)
