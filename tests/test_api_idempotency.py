"""Idempotency-Key through the HTTP app (issue 10 items 5, 13, 14): the response is stored in
the transaction of the events it answers for, so a retry always gets an answer that says what
happened, no key is ever locked, and only final outcomes are stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from api_helpers import Api, api_client
from esmongo.bank import Account, Bank, Command, CommandResult


@pytest.fixture
async def api(db: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[Api]:
    async with api_client(db) as client:
        yield client


async def balance(api: Api, account_id: str) -> Decimal:
    return (await api.services.bank.accounts.load(account_id)).balance


Handle = Callable[..., Awaitable[CommandResult]]


def after_handle(bank: Bank, then: Callable[[], Awaitable[None]]) -> None:
    """Run `then` once, after the next command has returned (its events committed)."""
    handle: Handle = bank.handle
    fired = [False]

    async def hooked(command: Command, *args: Any, **kwargs: Any) -> CommandResult:
        result = await handle(command, *args, **kwargs)
        if not fired[0]:
            fired[0] = True
            await then()
        return result

    bank.handle = hooked  # type: ignore[method-assign]


def pause_first_load(bank: Bank) -> tuple[asyncio.Event, asyncio.Event]:
    """The next account load, once loaded, waits for `go`; `paused` is set when it does."""
    paused, go = asyncio.Event(), asyncio.Event()
    load = bank.accounts.load

    async def pausing_load(account_id: str, **options: Any) -> Account:
        account = await load(account_id, **options)
        if not paused.is_set():
            paused.set()
            await go.wait()
        return account

    bank.accounts.load = pausing_load  # type: ignore[method-assign]
    return paused, go


class Crash(Exception):
    """The process dies here: the response is never sent."""


async def crash() -> None:
    raise Crash("killed after the append committed, before the response was sent")


async def post_crashing(api: Api, path: str, **kwargs: Any) -> None:
    try:
        r = await api.post(path, **kwargs)
    except Crash:
        return  # the ASGI transport re-raises what the app raised
    assert r.status_code == 500, r.text


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/accounts/a1/credit", {"amount": "5.00"}, 200),
        ("/accounts/a1/debit", {"amount": "2.00"}, 200),
        ("/accounts", {"ownerId": "cust1", "currency": "EUR"}, 201),
        ("/accounts/a1/freeze", {"reason": "stolen card"}, 200),
        ("/transfers", {"fromAccountId": "a1", "toAccountId": "a2", "amount": "3.00"}, 201),
    ],
)
async def test_a_retry_after_a_crash_gets_the_original_response(
    api: Api, path: str, body: dict[str, Any], status: int
) -> None:
    """Item 13: the command committed, the process died before answering; the retry gets the
    original 2xx response (not `alreadyApplied`, not 409), and nothing is applied twice."""
    await api.open_account("a1", funds="10.00")
    await api.open_account("a2")
    store = api.services.bank.store
    headers = {"Idempotency-Key": "crash-1"}
    head = await store.head_sequence()
    after_handle(api.services.bank, crash)
    await post_crashing(api, path, json=body, headers=headers)
    committed = [e async for e in store.read_all(after_sequence=head)]
    assert committed, "the command did not commit before the crash"
    retry = await api.post(path, json=body, headers=headers)
    assert retry.status_code == status, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["alreadyApplied"] is False
    assert retry.json()["eventIds"] == [e.event_id for e in committed]
    assert retry.json()["sequence"] == committed[-1].sequence
    assert await store.head_sequence() == committed[-1].sequence
    moved = {"credit": "15.00", "debit": "8.00", "transfers": "7.00"}
    for kind, expected in moved.items():
        if kind in path:
            assert await balance(api, "a1") == Decimal(expected)


async def test_a_failing_response_write_leaves_no_key_locked(api: Api) -> None:
    """Item 5: after the command, the idempotency collection refuses every response write
    (as a failing complete() did): the retry still answers with the original response."""
    await api.open_account("a1", funds="10.00")
    db = api.services.bank.db

    async def refuse_responses() -> None:
        schema = {"bsonType": "object", "properties": {"status": {"bsonType": "null"}}}
        await db.command("collMod", "idempotency_keys", validator={"$jsonSchema": schema})

    after_handle(api.services.bank, refuse_responses)
    store = api.services.bank.store
    head = await store.head_sequence()
    headers = {"Idempotency-Key": "locked?"}
    try:
        first = await api.post("/accounts/a1/credit", json={"amount": "5.00"}, headers=headers)
        assert first.status_code in (200, 500), first.text
    except PyMongoError:
        pass  # the write that failed surfaced through the ASGI transport
    committed = [e.event_id async for e in store.read_all(after_sequence=head)]
    retry = await api.post("/accounts/a1/credit", json={"amount": "5.00"}, headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json()["eventIds"] == committed
    assert await balance(api, "a1") == Decimal("15.00")


async def test_concurrent_requests_with_one_key_all_get_the_response(api: Api) -> None:
    """Item 5: the first request with the key is paused after loading the account; a second
    one with the same key runs to the end. The first then retries as an idempotent retry and
    answers the stored response: no 409 `idempotency_key_in_flight`, money moved once."""
    await api.open_account("a1", funds="10.00")
    paused, go = pause_first_load(api.services.bank)
    headers = {"Idempotency-Key": "same"}
    body = {"amount": "1.00"}
    first = asyncio.create_task(api.post("/accounts/a1/credit", json=body, headers=headers))
    await paused.wait()
    second = await api.post("/accounts/a1/credit", json=body, headers=headers)
    go.set()
    first_response = await first
    assert (first_response.status_code, second.status_code) == (200, 200), first_response.text
    assert first_response.json() == second.json()
    assert first_response.headers["Idempotent-Replayed"] == "true"
    assert await balance(api, "a1") == Decimal("11.00")


@pytest.mark.parametrize("other_account", [False, True])
async def test_a_key_reused_with_another_body_meanwhile_is_refused(
    api: Api, other_account: bool
) -> None:
    """The same key, another request, while the first is in flight: the first is refused
    (422) with nothing of it written; on another account its events are rolled back with
    the record that could not be inserted."""
    await api.open_account("a1", funds="10.00")
    await api.open_account("a2", funds="10.00")
    paused, go = pause_first_load(api.services.bank)
    headers = {"Idempotency-Key": "k"}
    first = asyncio.create_task(
        api.post("/accounts/a1/credit", json={"amount": "1.00"}, headers=headers)
    )
    await paused.wait()
    path = "/accounts/a2/credit" if other_account else "/accounts/a1/credit"
    second = await api.post(path, json={"amount": "2.00"}, headers=headers)
    go.set()
    refused = await first
    assert second.status_code == 200, second.text
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "idempotency_key_reused"
    assert await balance(api, "a1") == Decimal("10.00" if other_account else "12.00")
    assert await balance(api, "a2") == Decimal("12.00" if other_account else "10.00")


async def test_a_transient_conflict_is_not_stored(api: Api) -> None:
    """Item 14: a command that still conflicts after its last attempt answers 409
    `concurrency_conflict`; the retry with the key runs again and succeeds."""
    await api.open_account("a1", funds="10.00")
    bank = api.services.bank
    bank.handler.max_attempts = 1
    load = bank.accounts.load
    interfered = [False]

    async def load_then_interfere(account_id: str, **options: Any) -> Account:
        account = await load(account_id, **options)
        if not interfered[0]:
            interfered[0] = True
            other = await load(account_id)
            other.credit("1.00", "someone-else")
            await bank.accounts.save(other)
        return account

    bank.accounts.load = load_then_interfere  # type: ignore[method-assign]
    headers = {"Idempotency-Key": "conflict"}
    first = await api.post("/accounts/a1/debit", json={"amount": "4.00"}, headers=headers)
    assert first.status_code == 409 and first.json()["error"]["code"] == "concurrency_conflict"
    retry = await api.post("/accounts/a1/debit", json={"amount": "4.00"}, headers=headers)
    assert retry.status_code == 200, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    assert await balance(api, "a1") == Decimal("7.00")
    again = await api.post("/accounts/a1/debit", json={"amount": "4.00"}, headers=headers)
    assert again.json() == retry.json() and again.headers["Idempotent-Replayed"] == "true"


async def test_a_refusal_is_final_and_stored(api: Api) -> None:
    await api.open_account("a1", funds="10.00")
    headers = {"Idempotency-Key": "refused"}
    first = await api.post("/accounts/a1/debit", json={"amount": "50.00"}, headers=headers)
    assert first.status_code == 409 and first.json()["error"]["code"] == "insufficient_funds"
    await api.post("/accounts/a1/credit", json={"amount": "100.00"})
    again = await api.post("/accounts/a1/debit", json={"amount": "50.00"}, headers=headers)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert await balance(api, "a1") == Decimal("110.00")


async def test_no_key_means_no_record(api: Api) -> None:
    await api.open_account("a1", funds="10.00")
    assert await api.services.idempotency.collection.count_documents({}) == 0
    r = await api.post("/accounts/a1/credit", json={"amount": "1.00"})
    assert r.status_code == 200
    assert await api.services.idempotency.collection.count_documents({}) == 0
