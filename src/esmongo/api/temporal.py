"""Time travel over HTTP: an account as it was, its balance over time, all accounts at T."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query

from esmongo import AggregateNotFoundError
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
from esmongo.api.models import ERRORS, plain
from esmongo.api.params import utc_param
from esmongo.bank import Account, balance_history
from esmongo.model import TemporalQueries

router = APIRouter(tags=["time travel"], responses=ERRORS)


@router.get("/accounts/{account_id}/state", response_model=dict[str, Any])
async def state_at(
    account_id: AccountId,
    svc: ServicesDep,
    who: Annotated[Principal, require(*READERS)],
    at: Annotated[datetime | None, Query(description="A time (UTC when no offset).")] = None,
    version: Annotated[int | None, Query(ge=1, le=2**62)] = None,
) -> dict[str, Any]:
    """The account replayed up to `at` and/or `version`: what it was then."""
    if at is None and version is None:
        raise ApiError(422, "invalid_request", "give at=<time> or version=<n> (or both)")
    moment = utc_param(at, "at")
    await check_access(svc, who, account_id)
    queries = TemporalQueries(svc.bank.store, Account, snapshots=svc.bank.snapshots)
    account = await queries.state_at(account_id, at=moment, version=version)
    if account is None:
        raise ApiError(404, "not_yet_created", f"account {account_id} did not exist then")
    return plain(account.view())  # type: ignore[no-any-return]


@router.get("/accounts/{account_id}/balance-history", response_model=dict[str, Any])
async def account_balance_history(
    account_id: AccountId,
    svc: ServicesDep,
    who: Annotated[Principal, require(*READERS)],
    since: Annotated[
        datetime | None, Query(alias="from", description="Default: 30 days ago.")
    ] = None,
    until: Annotated[datetime | None, Query(alias="to", description="Default: now.")] = None,
) -> dict[str, Any]:
    """The opening balance, then one point per credit or debit with the balance after it."""
    end = utc_param(until, "to") or datetime.now(UTC)
    start = utc_param(since, "from") or end - timedelta(days=30)
    if start > end:
        raise ApiError(422, "invalid_request", "from must not be after to")
    await check_access(svc, who, account_id)
    try:
        history = await balance_history(svc.bank.store, account_id, start, end)
    except AggregateNotFoundError as exc:
        raise ApiError(404, "account_not_found", str(exc)) from exc
    return {
        "accountId": history.account_id,
        "currency": history.currency,
        "from": history.start.isoformat(),
        "to": history.end.isoformat(),
        "openingBalance": str(history.opening_balance),
        "closingBalance": str(history.closing_balance),
        "points": [
            {
                "timestamp": p.timestamp.isoformat(),
                "kind": p.kind,
                "amount": str(p.amount),
                "balance": str(p.balance),
                "transactionId": p.transaction_id,
                "version": p.version,
                "sequence": p.sequence,
            }
            for p in history.points
        ],
    }


@router.get("/reports/accounts", response_model=dict[str, Any])
async def accounts_at(
    svc: ServicesDep,
    who: Annotated[Principal, require(*STAFF_READERS)],
    at: Annotated[datetime, Query(description="A time (UTC when no offset).")],
    status: Annotated[str | None, Query(pattern="^(pending|active|frozen|closed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    """Every account as it was at `at` (one pass over the account events), with totals."""
    moment = utc_param(at, "at")
    assert moment is not None
    queries = TemporalQueries(svc.bank.store, Account)
    where = None if status is None else (lambda a: str(a.status) == status)
    accounts: list[dict[str, Any]] = []
    totals: dict[str, Decimal] = {}
    truncated = False
    async for account in queries.aggregates_at(moment, where):
        if len(accounts) == limit:
            truncated = True
            break
        accounts.append(plain(account.view()))
        totals[account.currency] = totals.get(account.currency, Decimal(0)) + account.balance
    return {
        "at": moment.isoformat(),
        "accounts": accounts,
        "totals": {currency: str(total) for currency, total in totals.items()},
        "truncated": truncated,
    }
