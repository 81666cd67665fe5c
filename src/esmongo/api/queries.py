"""The query side: read models for current state, the event store for history."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from esmongo.api.auth import Principal
from esmongo.api.context import (
    READERS,
    STAFF_READERS,
    AccountId,
    ServicesDep,
    check_access,
    require,
)
from esmongo.api.errors import ApiError
from esmongo.api.models import ERRORS, EventOut, EventsOut, HistoryOut, Page, plain
from esmongo.api.params import decimal_param, utc_param
from esmongo.bank import ReadModelLagging

router = APIRouter(tags=["queries"], responses=ERRORS)


@router.get("/accounts/{account_id}", response_model=dict[str, Any])
async def get_account(
    account_id: AccountId,
    svc: ServicesDep,
    who: Annotated[Principal, require(*READERS)],
    consistent: Annotated[
        bool, Query(description="Wait until the read model has every write committed so far.")
    ] = False,
) -> dict[str, Any]:
    """The account's read model (eventually consistent, or `consistent=true`)."""
    await check_access(svc, who, account_id)
    if consistent:
        try:
            await svc.bank.queries.wait_until_current(svc.consistency_timeout_s)
        except ReadModelLagging as exc:
            raise ApiError(503, "projection_lagging", str(exc)) from None
    doc = await svc.bank.queries.account(account_id)
    if doc is None:
        raise ApiError(
            404,
            "not_projected_yet",
            f"account {account_id} exists but is not in the read model yet; "
            "retry, or ask with consistent=true",
        )
    return plain(doc)  # type: ignore[no-any-return]


@router.get("/accounts", response_model=Page)
async def list_accounts(
    svc: ServicesDep,
    who: Annotated[Principal, require(*READERS)],
    owner: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(pattern="^(pending|active|frozen|closed)$")] = None,
    min_balance: Annotated[str | None, Query(max_length=20)] = None,
    max_balance: Annotated[str | None, Query(max_length=20)] = None,
    after: Annotated[
        str | None, Query(max_length=64, description="nextAfter of the last page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Page:
    """Accounts from the read model, by owner, status and balance range, by account id."""
    if not who.sees_all_accounts():
        if owner not in (None, who.user_id):
            raise ApiError(403, "forbidden", "customers only list their own accounts")
        owner = who.user_id
    page = await svc.bank.queries.accounts_page(
        owner=owner,
        status=status,
        min_balance=decimal_param(min_balance, "min_balance"),
        max_balance=decimal_param(max_balance, "max_balance"),
        after=after,
        limit=limit,
    )
    return Page(items=[plain(doc) for doc in page.items], nextAfter=page.next_after)


@router.get("/accounts/{account_id}/history", response_model=HistoryOut)
async def account_history(
    account_id: AccountId,
    svc: ServicesDep,
    who: Annotated[Principal, require(*READERS)],
    from_version: Annotated[int, Query(ge=1, le=2**62)] = 1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> HistoryOut:
    """The account's events, in version order, from the event store."""
    await check_access(svc, who, account_id)
    last = from_version + limit  # one more than asked, to know whether a next page exists
    events = [
        EventOut.of(e)
        async for e in svc.bank.store.read_stream("account", account_id, from_version, last)
    ]
    more = len(events) > limit
    events = events[:limit]
    next_from = events[-1].aggregateVersion + 1 if more else None
    return HistoryOut(accountId=account_id, events=events, nextFromVersion=next_from)


@router.get("/events", response_model=EventsOut)
async def list_events(
    svc: ServicesDep,
    who: Annotated[Principal, require(*STAFF_READERS)],
    type: Annotated[str | None, Query(max_length=100, description="Event type.")] = None,
    since: Annotated[datetime | None, Query(alias="from", description="From (inclusive).")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="To (exclusive).")] = None,
    correlation_id: Annotated[str | None, Query(max_length=128)] = None,
    after_sequence: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventsOut:
    """Events by type and time window, or by correlation id, paginated by sequence."""
    since, until = utc_param(since, "from"), utc_param(until, "to")
    events = [
        EventOut.of(e)
        async for e in svc.bank.store.read_all(
            after_sequence,
            limit + 1,
            event_types=[type] if type else None,
            start=since,
            end=until,
            correlation_id=correlation_id,
        )
    ]
    more = len(events) > limit
    events = events[:limit]
    return EventsOut(events=events, nextAfterSequence=events[-1].sequence if more else None)
