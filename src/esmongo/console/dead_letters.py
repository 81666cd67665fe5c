"""Dead letters: the list, one with its event and error, retry and discard (one or all)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from esmongo.api.errors import ApiError
from esmongo.api.operations import discard_letter, retry_letter
from esmongo.console.access import OperatorDep, Refused, ViewerDep
from esmongo.console.render import page
from esmongo.projections import DeadLetters

router = APIRouter()
PAGE = 100
LetterId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}:[0-9]{1,18}$")]
ProjectionFilter = Annotated[str, Query(pattern=r"^[A-Za-z0-9_.-]{0,64}$")]


def _staff_only(viewer: ViewerDep) -> None:
    if not viewer.staff:
        raise Refused(403, "refused: dead letters are for staff")


@router.get("/ui/dead-letters", response_class=HTMLResponse)
async def dead_letters_page(
    request: Request,
    viewer: ViewerDep,
    projection: ProjectionFilter = "",
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    _staff_only(viewer)
    dead = DeadLetters(viewer.svc.bank.db)
    letters = await dead.find(projection or None, limit=PAGE, skip=skip)
    return page(
        request,
        "dead_letters.html",
        viewer,
        title="Dead letters",
        letters=letters,
        total=await dead.count(projection or None),
        projection=projection,
        names=[p.name for p in viewer.svc.projection_defs],
        skip=skip,
        next_skip=skip + PAGE if len(letters) == PAGE else None,
    )


@router.get("/ui/dead-letters/{letter_id}", response_class=HTMLResponse)
async def dead_letter_page(request: Request, viewer: ViewerDep, letter_id: LetterId) -> Response:
    _staff_only(viewer)
    name, _, sequence = letter_id.rpartition(":")
    letter = await DeadLetters(viewer.svc.bank.db).get(name, int(sequence))
    if letter is None:
        raise Refused(404, f"no dead letter {letter_id}")
    event = await viewer.svc.bank.store.event_at(letter.sequence)
    return page(
        request,
        "dead_letter.html",
        viewer,
        title=f"Dead letter {letter_id}",
        letter=letter,
        letter_id=letter_id,
        event=event,
    )


async def _each(viewer: OperatorDep, projection: str, retry: bool) -> None:
    """Oldest first, one at a time (a retry must follow the order the projection saw)."""
    letters = await DeadLetters(viewer.svc.bank.db).find(projection or None, limit=PAGE)
    for letter in letters:
        letter_id = f"{letter.projection}:{letter.sequence}"
        act = retry_letter if retry else discard_letter
        await act(viewer.svc, letter_id, viewer.who, source="console")


@router.post("/ui/dead-letters/{action}-all")
async def act_on_all(
    action: str, viewer: OperatorDep, projection: ProjectionFilter = ""
) -> Response:
    if action not in ("retry", "discard"):
        raise Refused(404, f"no action {action}")
    try:
        await _each(viewer, projection, action == "retry")
    except ApiError as exc:
        raise Refused(exc.status, exc.message) from None
    notice = "retried-all" if action == "retry" else "discarded-all"
    return RedirectResponse(f"/ui/dead-letters?notice={notice}", status_code=303)


@router.post("/ui/dead-letters/{letter_id}/{action}")
async def act_on_one(letter_id: LetterId, action: str, viewer: OperatorDep) -> Response:
    if action not in ("retry", "discard"):
        raise Refused(404, f"no action {action}")
    try:
        if action == "retry":
            await retry_letter(viewer.svc, letter_id, viewer.who, source="console")
        else:
            await discard_letter(viewer.svc, letter_id, viewer.who, source="console")
    except ApiError as exc:
        raise Refused(exc.status, exc.message) from None
    notice = "retried" if action == "retry" else "discarded"
    return RedirectResponse(f"/ui/dead-letters?notice={notice}", status_code=303)
