"""The command side: every POST appends events (or is refused with the reason).

No `from __future__ import annotations` here: FastAPI must see the routes' annotations as
objects, and some are built in closures (one route per transition).
"""

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError

from esmongo import AggregateNotFoundError, ConcurrencyError, DomainError, RecordedEvent
from esmongo.api.auth import Principal, Role
from esmongo.api.context import (
    AccountId,
    ReasonHeader,
    ServicesDep,
    actor,
    check_access,
    require,
    services_of,
)
from esmongo.api.errors import ApiError, to_api_error
from esmongo.api.errors import body as error_body
from esmongo.api.idempotency import (
    KeyReused,
    StoredResponse,
    request_fingerprint,
    scoped_key,
)
from esmongo.api.metadata import event_metadata
from esmongo.api.models import (
    ERRORS,
    ArchiveOut,
    CloseBody,
    CommandOut,
    CreateAccountBody,
    FreezeBody,
    MoneyBody,
    TransferBody,
    TransferOut,
)
from esmongo.bank import (
    ActivateAccount,
    CloseAccount,
    Command,
    CommandResult,
    CreateAccount,
    CreditAccount,
    DebitAccount,
    FreezeAccount,
    TransferFunds,
    UnfreezeAccount,
    command_target,
)
from esmongo.store.unit_of_work import DocumentWrite

router = APIRouter(tags=["commands"], responses=ERRORS)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Same key and body: the first response is replayed and nothing is appended.",
    ),
]
STAFF = (Role.ADMIN, Role.TELLER)
ANYONE_WITH_ACCOUNTS = (Role.ADMIN, Role.TELLER, Role.CUSTOMER)

Render = Callable[[CommandResult], tuple[int, dict[str, Any]]]
"""The success response of a command from its result."""
Prepare = Callable[[str | None], tuple[Command, Render]]
"""The command to run, given a stable token derived from the Idempotency-Key (None without)."""


def _replay(stored: StoredResponse) -> JSONResponse:
    response = JSONResponse(stored.body, status_code=stored.status)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _reused() -> ApiError:
    return ApiError(
        422,
        "idempotency_key_reused",
        "this Idempotency-Key was used with another request; use a new key",
    )


def _final(error: Exception) -> bool:
    """A refusal that running the command again would repeat; a conflict is transient."""
    return not isinstance(error, ConcurrencyError)


async def idempotent(
    request: Request,
    who: Principal,
    key: str | None,
    payload: Any,
    prepare: Prepare,
) -> JSONResponse:
    """Run the command once per (caller, key, request); replay its final response afterwards.

    The response is stored in the transaction of the command's events (see
    esmongo.api.idempotency), so it exists if and only if the effect does. The command's
    event ids derive from the key's token, so a concurrent or repeated request with the key
    is an idempotent retry that reads the stored response.
    """
    svc = services_of(request)
    metadata = event_metadata(request, who)
    if key is None:
        command, render = prepare(None)
        result = await svc.bank.handle(command, metadata)
        if not result.success:
            assert result.error is not None
            raise to_api_error(result.error)
        status, body = render(result)
        return JSONResponse(body, status_code=status)
    scoped = scoped_key(who.user_id, key)
    fingerprint = request_fingerprint(request.method, request.url.path, payload)
    try:
        earlier = await svc.idempotency.find(scoped, fingerprint)
        if earlier is not None:
            return _replay(earlier)
        command, render = prepare(scoped[:32])
        target = command_target(command)

        def writes(recorded: list[list[RecordedEvent]]) -> list[DocumentWrite]:
            events = [e for stream in recorded for e in stream]
            status, body = render(CommandResult.recorded(target, events))
            return [svc.idempotency.record(scoped, fingerprint, StoredResponse(status, body))]

        try:
            result = await svc.bank.handle(command, metadata, writes=writes)
        except PyMongoError as exc:
            # Our record's insert failed: the key answered a request meanwhile (or another).
            earlier = await svc.idempotency.find(scoped, fingerprint)
            if earlier is None:
                raise exc from None
            return _replay(earlier)
        if result.success and not result.already_applied:
            status, body = render(result)
            return JSONResponse(body, status_code=status)
        if result.success:
            # Applied before: by a request with this key (its response is stored with its
            # events), or by one without it (same transaction id): answer and store now.
            earlier = await svc.idempotency.find(scoped, fingerprint)
            if earlier is not None:
                return _replay(earlier)
            status, body = render(result)
        else:
            assert result.error is not None
            error = to_api_error(result.error)
            if not _final(result.error):
                raise error  # transient: not stored, the retry runs the command again
            status, body = error.status, error_body(error.code, error.message, error.details)
        stored = await svc.idempotency.store(scoped, fingerprint, StoredResponse(status, body))
    except KeyReused:
        raise _reused() from None
    response = JSONResponse(stored.body, status_code=stored.status)
    if stored.body != body or stored.status != status:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _out(result: CommandResult) -> dict[str, Any]:
    return CommandOut(
        accountId=result.aggregate_id,
        version=result.version,
        eventIds=result.event_ids,
        sequence=result.last_sequence,
        alreadyApplied=result.already_applied,
    ).model_dump(mode="json")


@router.post("/accounts", status_code=201, response_model=CommandOut)
async def create_account(
    request: Request,
    body: CreateAccountBody,
    who: Annotated[Principal, require(*ANYONE_WITH_ACCOUNTS)],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Open an account (pending until activated). Customers open accounts for themselves."""
    if who.role == Role.CUSTOMER and body.ownerId not in (None, who.user_id):
        raise ApiError(403, "forbidden", "customers can only open accounts for themselves")
    owner_id = body.ownerId or who.user_id
    owner_name = body.ownerName or (who.user_name if owner_id == who.user_id else owner_id)

    def prepare(token: str | None) -> tuple[Command, Render]:
        account_id = body.accountId or f"acc_{token or uuid.uuid4().hex}"[:36]
        command = CreateAccount(account_id, owner_id, owner_name, body.currency, command_id=token)
        return command, lambda result: (201, _out(result))

    return await idempotent(request, who, idempotency_key, body.model_dump(), prepare)


def _movement(kind: str, roles: tuple[Role, ...]) -> None:
    make = CreditAccount if kind == "credit" else DebitAccount

    async def endpoint(
        request: Request,
        account_id: AccountId,
        body: MoneyBody,
        who: Annotated[Principal, require(*roles)],
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        if not who.sees_all_accounts():  # staff: the command itself says 404
            await check_access(services_of(request), who, account_id)

        def prepare(token: str | None) -> tuple[Command, Render]:
            txn = body.transactionId or f"txn_{token or uuid.uuid4().hex}"
            command = make(account_id, body.amount, txn, body.reason)
            return command, lambda result: (200, _out(result))

        return await idempotent(request, who, idempotency_key, body.model_dump(), prepare)

    endpoint.__name__ = f"{kind}_account"
    endpoint.__doc__ = f"{kind.capitalize()} an active account. The amount is a decimal string."
    router.post(f"/accounts/{{account_id}}/{kind}", response_model=CommandOut)(endpoint)


_movement("credit", STAFF)
_movement("debit", ANYONE_WITH_ACCOUNTS)


def _transition(
    name: str, make: Callable[[str, Any, str | None], Command], body_model: Any
) -> None:
    async def endpoint(
        request: Request,
        account_id: AccountId,
        who: Annotated[Principal, require(*STAFF)],
        body: body_model = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        payload = body.model_dump() if body is not None else {}

        def prepare(token: str | None) -> tuple[Command, Render]:
            return make(account_id, body, token), lambda result: (200, _out(result))

        return await idempotent(request, who, idempotency_key, payload, prepare)

    endpoint.__name__ = f"{name}_account"
    endpoint.__doc__ = f"{name.capitalize()} an account (staff only)."
    router.post(f"/accounts/{{account_id}}/{name}", response_model=CommandOut)(endpoint)


# The token derived from the Idempotency-Key is the command id: a retry is recognised.
_transition("activate", lambda a, b, t: ActivateAccount(a, t), CloseBody | None)
_transition("freeze", lambda a, b, t: FreezeAccount(a, b.reason if b else "", t), FreezeBody)
_transition("unfreeze", lambda a, b, t: UnfreezeAccount(a, t), CloseBody | None)
_transition("close", lambda a, b, t: CloseAccount(a, b.reason if b else None, t), CloseBody | None)


@router.post("/transfers", status_code=201, response_model=TransferOut)
async def transfer(
    request: Request,
    body: TransferBody,
    who: Annotated[Principal, require(*ANYONE_WITH_ACCOUNTS)],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Move money between two accounts: one atomic append over both streams."""
    if not who.sees_all_accounts():  # staff: the command itself says 404
        await check_access(services_of(request), who, body.fromAccountId)

    def prepare(token: str | None) -> tuple[Command, Render]:
        transfer_id = body.transferId or f"trf_{token or uuid.uuid4().hex}"
        command = TransferFunds(
            body.fromAccountId, body.toAccountId, body.amount, transfer_id, body.reason
        )
        return command, lambda result: (201, transfer_out(transfer_id, result))

    def transfer_out(transfer_id: str, result: CommandResult) -> dict[str, Any]:
        out = TransferOut(
            transferId=transfer_id,
            fromAccountId=body.fromAccountId,
            toAccountId=body.toAccountId,
            amount=body.amount,
            eventIds=result.event_ids,
            sequence=result.last_sequence,
            alreadyApplied=result.already_applied,
        )
        return out.model_dump(mode="json")

    return await idempotent(request, who, idempotency_key, body.model_dump(), prepare)


@router.post("/accounts/{account_id}/archive", response_model=ArchiveOut)
async def archive_account(
    account_id: AccountId,
    svc: ServicesDep,
    who: Annotated[Principal, require(Role.ADMIN)],
    reason: ReasonHeader = None,
) -> ArchiveOut:
    """Archive a closed account (admin only): its events move to `events_archive` in one
    transaction and stay readable (history, state at a time, balance history); it takes no
    more commands. Idempotent: archiving it again answers `alreadyArchived: true`.
    409 `account_not_closed` unless the account is closed; 404 for an unknown account."""
    try:
        report = await svc.bank.archive_account(account_id)
    except (DomainError, AggregateNotFoundError, ConcurrencyError) as exc:
        raise to_api_error(exc) from None
    if not report.already:
        details = {"account": account_id, "events": report.events}
        await svc.audit.record("StreamArchived", actor(who), reason=reason, details=details)
    return ArchiveOut(
        accountId=account_id,
        version=report.version,
        events=report.events,
        firstSequence=report.first_sequence,
        lastSequence=report.last_sequence,
        archivedAt=report.archived_at,
        snapshotKept=report.snapshot_kept,
        alreadyArchived=report.already,
    )
