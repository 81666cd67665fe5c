"""Time travel for an account: balance over time, the state at a version or a moment, and
two points side by side."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from esmongo.bank import Account
from esmongo.console.access import Refused, Viewer, ViewerDep
from esmongo.console.charts import polyline, steps
from esmongo.console.render import page
from esmongo.console.streams import Name
from esmongo.model import TemporalQueries

router = APIRouter()
CHART_VERSIONS = 1000
"""The chart shows the movements among the account's latest versions, at most this many:
each credit and debit carries the balance after it, so no replay from the start is needed."""
Version = Annotated[str, Query(pattern=r"^[0-9]{0,18}$", description="empty: not given")]
Moment = Annotated[str, Query(max_length=40, description="YYYY-MM-DDTHH:MM[:SS] in UTC")]


def parse_moment(value: str, name: str) -> datetime | None:
    """A date-time from a form (datetime-local sends no zone: UTC is meant)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(422, f"{name}: {value!r} is not a date and time (YYYY-MM-DDTHH:MM)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def state(
    viewer: Viewer, account_id: str, version: int | None, at: datetime | None
) -> dict[str, Any] | None:
    if version is None and at is None:
        return None
    svc = viewer.svc
    queries = TemporalQueries(svc.bank.store, Account, snapshots=svc.bank.snapshots)
    account = await queries.state_at(account_id, at=at, version=version)
    return account.view() if account is not None else {}


@router.get("/ui/accounts/{account_id}/time", response_class=HTMLResponse)
async def time_travel(
    request: Request,
    viewer: ViewerDep,
    account_id: Name,
    version: Version = "",
    at: Moment = "",
    compare: Version = "",
    compare_at: Moment = "",
) -> Response:
    """A form with empty fields sends them empty: they mean "not given"."""
    if (
        not await viewer.may_see_account(account_id)
        or await viewer.svc.bank.queries.owner(account_id) is None
    ):
        raise Refused(404, f"no account {account_id} you may see")
    store = viewer.svc.bank.store
    head = await store.stream_version("account", account_id)
    moment, compare_moment = parse_moment(at, "at"), parse_moment(compare_at, "compare_at")
    chosen = min(int(version), head) if version and int(version) > 0 else None
    other = min(int(compare), head) if compare and int(compare) > 0 else None
    if chosen is None and moment is None:
        chosen = head
    since = max(1, head - CHART_VERSIONS + 1)
    window = [e async for e in store.read_stream("account", account_id, since, head)]
    points = [(e.timestamp, e.data["balanceAfter"]) for e in window if "balanceAfter" in e.data]
    xs = [moment.timestamp() for moment, _ in points]
    ys = [float(balance) for _, balance in points]
    if xs:
        xs, ys = steps(ys, xs)
    return page(
        request,
        "timetravel.html",
        viewer,
        title=f"Time travel: {account_id}",
        account_id=account_id,
        head=head,
        version=chosen,
        at=at,
        compare=other,
        compare_at=compare_at,
        state=await state(viewer, account_id, chosen, moment),
        other=await state(viewer, account_id, other, compare_moment),
        currency=window[-1].data.get("currency", "") if window else "",
        closing=points[-1][1] if points else None,
        lowest=min(balance for _, balance in points) if points else None,
        highest=max(balance for _, balance in points) if points else None,
        chart=polyline(ys, 640, 160, xs) if ys else None,
        partial=since > 1,
        chart_versions=CHART_VERSIONS,
    )
