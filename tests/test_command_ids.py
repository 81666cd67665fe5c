"""Every command, retried with its command id (the API: its Idempotency-Key), is applied once
(issue 10, item 6): not only money movements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from api_helpers import Api, api_client
from esmongo.bank import (
    ActivateAccount,
    Bank,
    CloseAccount,
    CommandIdReused,
    CreateAccount,
    FreezeAccount,
    UnfreezeAccount,
)
from esmongo.codec import Document


@pytest.fixture
async def bank(db: AsyncDatabase[Document]) -> Bank:
    return await Bank(db).init()


@pytest.fixture
async def api(db: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[Api]:
    async with api_client(db) as client:
        yield client


async def test_every_command_retried_with_its_id_is_applied_once(bank: Bank) -> None:
    commands = [
        CreateAccount("a1", "u1", "Ann", "EUR", command_id="c-create"),
        ActivateAccount("a1", command_id="c-activate"),
        FreezeAccount("a1", "checks", command_id="c-freeze"),
        UnfreezeAccount("a1", command_id="c-unfreeze"),
        CloseAccount("a1", "done", command_id="c-close"),
    ]
    for command in commands:
        first = await bank.handle(command)
        assert first.success and not first.already_applied, first.error
        head = await bank.store.head_sequence()
        retry = await bank.handle(command)
        assert retry.success, retry.error
        assert retry.already_applied
        assert (retry.version, retry.event_ids) == (first.version, first.event_ids)
        assert await bank.store.head_sequence() == head
    assert await bank.store.stream_version("account", "a1") == 5


async def test_a_retry_the_state_still_allows_is_recorded_once(bank: Bank) -> None:
    """freeze, unfreeze (by someone else), freeze retried: the state allows it again, but the
    stable event id makes the store answer with the first recording."""
    await bank.handle(CreateAccount("a1", "u1", "Ann", "EUR"))
    await bank.handle(ActivateAccount("a1"))
    freeze = FreezeAccount("a1", "checks", command_id="k1")
    first = await bank.handle(freeze)
    assert (await bank.handle(UnfreezeAccount("a1"))).success
    retry = await bank.handle(freeze)
    assert retry.success and retry.already_applied
    assert retry.event_ids == first.event_ids
    assert await bank.store.stream_version("account", "a1") == 4


async def test_a_command_id_used_for_another_command_is_refused(bank: Bank) -> None:
    await bank.handle(CreateAccount("a1", "u1", "Ann", "EUR", command_id="k"))
    await bank.handle(ActivateAccount("a1", command_id="k2"))
    result = await bank.handle(FreezeAccount("a1", "x", command_id="k2"))
    assert not result.success
    assert isinstance(result.error, CommandIdReused)


async def test_without_a_command_id_a_repeat_is_refused_as_before(bank: Bank) -> None:
    await bank.handle(CreateAccount("a1", "u1", "Ann", "EUR"))
    assert (await bank.handle(ActivateAccount("a1"))).success
    again = await bank.handle(ActivateAccount("a1"))
    assert not again.success and again.error is not None
    assert again.error.code == "invalid_transition"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/accounts", {"accountId": "n1", "ownerId": "cust1", "currency": "EUR"}, 201),
        ("/accounts", {"ownerId": "cust1", "currency": "EUR"}, 201),
        ("/accounts/a1/freeze", {"reason": "lost card"}, 200),
        ("/accounts/a1/close", {}, 200),
    ],
)
async def test_api_retry_after_an_unknown_outcome_is_answered_as_applied(
    api: Api, path: str, body: dict[str, Any], status: int
) -> None:
    """The first call succeeded but its answer was lost, and so was the stored response (it
    expired, or was never stored): the retry still says "applied", not 409."""
    await api.open_account("a1")
    headers = {"Idempotency-Key": f"retry-{path}"}
    first = await api.post(path, json=body, headers=headers)
    assert first.status_code == status, first.text
    await api.services.idempotency.collection.delete_many({})
    store = api.services.bank.store
    head = await store.head_sequence()
    retry = await api.post(path, json=body, headers=headers)
    assert retry.status_code == status, retry.text
    assert retry.json()["alreadyApplied"] is True
    assert retry.json()["eventIds"] == first.json()["eventIds"]
    assert retry.json()["accountId"] == first.json()["accountId"]
    assert await store.head_sequence() == head


async def test_api_activate_retried_is_applied_once(api: Api) -> None:
    r = await api.post("/accounts", json={"accountId": "a2", "ownerId": "cust1"})
    assert r.status_code == 201
    headers = {"Idempotency-Key": "act-1"}
    first = await api.post("/accounts/a2/activate", headers=headers)
    await api.services.idempotency.collection.delete_many({})
    retry = await api.post("/accounts/a2/activate", headers=headers)
    assert (first.status_code, retry.status_code) == (200, 200), retry.text
    assert retry.json()["eventIds"] == first.json()["eventIds"]
