"""The HTTP API end to end on the real database: commands, errors, auth, idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from api_helpers import Api, api_client


@pytest.fixture
async def api(db: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[Api]:
    async with api_client(db) as client:
        yield client


async def balance(api: Api, account_id: str) -> Decimal:
    account = await api.services.bank.accounts.load(account_id)
    return account.balance


async def test_account_lifecycle(api: Api) -> None:
    r = await api.post("/accounts", json={"accountId": "a1", "ownerId": "cust1", "currency": "EUR"})
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and len(r.json()["eventIds"]) == 1
    for step, version in (("activate", 2),):
        r = await api.post(f"/accounts/a1/{step}")
        assert (r.status_code, r.json()["version"]) == (200, version)
    r = await api.post("/accounts/a1/credit", json={"amount": "100.10", "reason": "salary"})
    assert r.status_code == 200 and r.json()["sequence"] > 0
    r = await api.post("/accounts/a1/debit", json={"amount": "0.10"})
    assert r.status_code == 200
    assert await balance(api, "a1") == Decimal("100.00")
    r = await api.post("/accounts/a1/freeze", json={"reason": "lost card"})
    assert r.status_code == 200
    r = await api.post("/accounts/a1/unfreeze")
    assert r.status_code == 200
    r = await api.post("/accounts/a1/close")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "balance_not_zero"
    await api.post("/accounts/a1/debit", json={"amount": "100.00"})
    r = await api.post("/accounts/a1/close", json={"reason": "moving away"})
    assert r.status_code == 200 and r.json()["version"] == 8


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount": 10.5}, 422, "invalid_request"),  # a JSON number: refused
        ({"amount": "-1"}, 422, "invalid_request"),
        ({"amount": "1.234"}, 422, "invalid_request"),
        ({"amount": "0"}, 422, "invalid_amount"),
        ({"amount": "5", "extra": 1}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"amount": "5000.00"}, 409, "insufficient_funds"),
    ],
)
async def test_debit_errors(api: Api, body: dict[str, Any], status: int, code: str) -> None:
    await api.open_account("a1", funds="10.00")
    before = await api.services.bank.store.head_sequence()
    r = await api.post("/accounts/a1/debit", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    assert await api.services.bank.store.head_sequence() == before  # nothing written


async def test_invalid_field_is_named(api: Api) -> None:
    await api.open_account("a1")
    r = await api.post("/accounts/a1/credit", json={"amount": 3})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "body.amount"


async def test_malformed_json_and_unknown_account(api: Api) -> None:
    r = await api.post(
        "/accounts/x/credit", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    r = await api.post("/accounts/nope/credit", json={"amount": "1.00"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "account_not_found"
    r = await api.post("/accounts/a1/activate")
    assert r.status_code == 404


async def test_frozen_account_refuses_money(api: Api) -> None:
    await api.open_account("a1", funds="10.00")
    await api.post("/accounts/a1/freeze", json={"reason": "fraud check"})
    r = await api.post("/accounts/a1/debit", json={"amount": "1.00"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "account_not_active")


async def test_authentication(api: Api) -> None:
    r = await api.http.get("/accounts/a1/history")
    assert r.status_code == 401 and "Authorization" in r.json()["error"]["message"]
    r = await api.http.get("/accounts/a1/history", headers={"Authorization": "Bearer esk_nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    r = await api.http.get("/accounts/a1/history", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


async def test_authorization_matrix(api: Api) -> None:
    await api.open_account("mine", owner="cust1", funds="50.00")
    await api.open_account("theirs", owner="cust2", funds="50.00")
    # Customers: their own accounts only; no credits, no staff transitions.
    assert (await api.get("/accounts/mine/history", "cust1")).status_code == 200
    r = await api.get("/accounts/theirs/history", "cust1")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert (
        await api.post("/accounts/mine/debit", "cust1", json={"amount": "1"})
    ).status_code == 200
    assert (
        await api.post("/accounts/theirs/debit", "cust1", json={"amount": "1"})
    ).status_code == 403
    assert (
        await api.post("/accounts/mine/credit", "cust1", json={"amount": "1"})
    ).status_code == 403
    assert (
        await api.post("/accounts/mine/freeze", "cust1", json={"reason": "x"})
    ).status_code == 403
    assert (await api.get("/events", "cust1")).status_code == 403
    r = await api.post("/accounts", "cust1", json={"ownerId": "cust2"})
    assert r.status_code == 403
    r = await api.post("/accounts", "cust1", json={"currency": "GBP"})
    assert r.status_code == 201
    # Auditors read everything and write nothing.
    assert (await api.get("/accounts/theirs/history", "auditor")).status_code == 200
    assert (await api.get("/events", "auditor")).status_code == 200
    r = await api.post("/accounts/mine/debit", "auditor", json={"amount": "1"})
    assert r.status_code == 403 and "auditor" in r.json()["error"]["message"]
    # Tellers run every account command.
    assert (
        await api.post("/accounts/theirs/credit", "teller", json={"amount": "1"})
    ).status_code == 200
    assert (
        await api.post("/accounts/theirs/freeze", "teller", json={"reason": "x"})
    ).status_code == 200


async def test_idempotency_key(api: Api) -> None:
    await api.open_account("a1", funds="10.00")
    store = api.services.bank.store
    headers = {"Idempotency-Key": "k-1"}
    first = await api.post("/accounts/a1/credit", json={"amount": "5.00"}, headers=headers)
    head = await store.head_sequence()
    again = await api.post("/accounts/a1/credit", json={"amount": "5.00"}, headers=headers)
    assert again.status_code == first.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await store.head_sequence() == head
    assert await balance(api, "a1") == Decimal("15.00")
    other = await api.post("/accounts/a1/credit", json={"amount": "6.00"}, headers=headers)
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    # Keys are per caller: another caller may use the same key.
    r = await api.post("/accounts/a1/credit", "teller", json={"amount": "5.00"}, headers=headers)
    assert r.status_code == 200 and "Idempotent-Replayed" not in r.headers
    # A refused command is replayed as refused.
    bad = {"Idempotency-Key": "k-2"}
    r1 = await api.post("/accounts/a1/debit", json={"amount": "999.00"}, headers=bad)
    r2 = await api.post("/accounts/a1/debit", json={"amount": "999.00"}, headers=bad)
    assert r1.status_code == r2.status_code == 409 and r1.json() == r2.json()


async def test_concurrent_requests_with_one_key_move_money_once(api: Api) -> None:
    await api.open_account("a1", funds="10.00")
    headers = {"Idempotency-Key": "same"}
    responses = await asyncio.gather(
        *[
            api.post("/accounts/a1/credit", json={"amount": "1.00"}, headers=headers)
            for _ in range(6)
        ]
    )
    assert {r.status_code for r in responses} <= {200, 409}
    assert any(r.status_code == 200 for r in responses)
    assert await balance(api, "a1") == Decimal("11.00")


async def test_transaction_id_moves_money_once(api: Api) -> None:
    await api.open_account("a1", funds="10.00")
    body = {"amount": "2.50", "transactionId": "txn-42"}
    r1 = await api.post("/accounts/a1/debit", json=body)
    r2 = await api.post("/accounts/a1/debit", json=body)
    assert r1.status_code == r2.status_code == 200
    assert r2.json()["alreadyApplied"] is True and r2.json()["eventIds"] == r1.json()["eventIds"]
    assert await balance(api, "a1") == Decimal("7.50")
    r3 = await api.post("/accounts/a1/debit", json={"amount": "3.00", "transactionId": "txn-42"})
    assert (r3.status_code, r3.json()["error"]["code"]) == (409, "transaction_id_reused")


async def test_metadata_recorded_on_events(api: Api) -> None:
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {
        "X-Correlation-Id": "corr-abc",
        "X-Causation-Id": "evt-cause",
        "traceparent": trace,
        "User-Agent": "pytest-agent",
    }
    r = await api.post("/accounts", "cust1", json={"accountId": "m1"}, headers=headers)
    assert r.status_code == 201 and r.headers["X-Correlation-Id"] == "corr-abc"
    events = [e async for e in api.services.bank.store.read_stream("account", "m1")]
    meta = events[0].metadata
    assert meta["userId"] == "cust1" and meta["userName"] == "Customer One"
    assert meta["correlationId"] == "corr-abc" and meta["causationId"] == "evt-cause"
    assert meta["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert meta["spanId"] == "00f067aa0ba902b7"
    assert meta["ipAddress"] == "127.0.0.2" and meta["userAgent"] == "pytest-agent"
    assert meta["source"] == "api"
    generated = await api.post("/accounts", "cust1", json={})
    assert generated.headers["X-Correlation-Id"].startswith("corr_")


async def test_history_is_paginated(api: Api) -> None:
    await api.open_account("a1", funds="1.00")
    for i in range(5):
        await api.post("/accounts/a1/credit", json={"amount": "1.00", "transactionId": f"t{i}"})
    r = await api.get("/accounts/a1/history", params={"limit": 3})
    page = r.json()
    assert [e["aggregateVersion"] for e in page["events"]] == [1, 2, 3]
    assert page["nextFromVersion"] == 4
    r = await api.get("/accounts/a1/history", params={"from_version": 4, "limit": 10})
    page = r.json()
    assert [e["aggregateVersion"] for e in page["events"]] == [4, 5, 6, 7, 8]
    assert page["nextFromVersion"] is None
    credit = page["events"][-1]
    assert credit["data"]["amount"] == "1.00" and credit["data"]["balanceAfter"] == "6.00"


async def test_transfers_conserve_money_under_concurrency(api: Api) -> None:
    accounts = [f"t{i}" for i in range(4)]
    for account in accounts:
        await api.open_account(account, funds="100.00")

    async def move(i: int) -> int:
        src, dst = accounts[i % 4], accounts[(i * 3 + 1) % 4]
        if src == dst:
            dst = accounts[(i + 1) % 4]
        body = {"fromAccountId": src, "toAccountId": dst, "amount": f"{(i % 7) + 1}.25"}
        return (await api.post("/transfers", "teller", json=body)).status_code

    statuses = await asyncio.gather(*[move(i) for i in range(40)])
    assert set(statuses) <= {201, 409}
    assert statuses.count(201) >= 20
    balances = [await balance(api, a) for a in accounts]
    assert sum(balances) == Decimal("400.00")
    assert all(b >= 0 for b in balances)
    transfers = [
        e
        async for e in api.services.bank.store.read_all(event_types=["account.debited"])
        if "transferId" in e.data
    ]
    assert len(transfers) == statuses.count(201)


async def test_transfer_rules(api: Api) -> None:
    await api.open_account("e1", currency="EUR", funds="10.00")
    await api.open_account("u1", currency="USD")
    r = await api.post(
        "/transfers", json={"fromAccountId": "e1", "toAccountId": "u1", "amount": "1"}
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, "currency_mismatch")
    r = await api.post(
        "/transfers", json={"fromAccountId": "e1", "toAccountId": "e1", "amount": "1"}
    )
    assert r.status_code == 422
    r = await api.post(
        "/transfers", json={"fromAccountId": "e1", "toAccountId": "zz", "amount": "1"}
    )
    assert r.status_code == 404


async def test_health_and_metrics(api: Api) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    r = await api.http.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
    await api.open_account("a1", funds="1.00")
    text = (await api.http.get("/metrics")).text
    assert "esmongo_events_append_latency_seconds_bucket" in text
    assert "esmongo_events_replay_duration_seconds" in text


async def test_events_by_type_time_and_correlation(api: Api) -> None:
    await api.open_account("a1", funds="1.00")
    await api.post(
        "/accounts/a1/credit", json={"amount": "2.00"}, headers={"X-Correlation-Id": "c-9"}
    )
    r = await api.get("/events", params={"type": "account.credited", "limit": 1})
    page = r.json()
    assert [e["eventType"] for e in page["events"]] == ["account.credited"]
    assert page["nextAfterSequence"] == page["events"][0]["sequence"]
    r = await api.get(
        "/events", params={"type": "account.credited", "after_sequence": page["nextAfterSequence"]}
    )
    assert [e["data"]["amount"] for e in r.json()["events"]] == ["2.00"]
    assert r.json()["nextAfterSequence"] is None
    r = await api.get("/events", params={"correlation_id": "c-9"})
    assert [e["metadata"]["correlationId"] for e in r.json()["events"]] == ["c-9"]
    r = await api.get("/events", params={"type": "account.credited", "from": "2999-01-01T00:00:00"})
    assert r.json()["events"] == []
    r = await api.get("/events", params={"from": "not-a-date"})
    assert r.status_code == 422


async def test_time_travel_endpoints(api: Api) -> None:
    await api.open_account("a1", funds="100.00")
    await api.open_account("a2", funds="5.00")
    history = (await api.get("/accounts/a1/history")).json()["events"]
    after_credit = history[2]["timestamp"]
    await api.post("/accounts/a1/debit", json={"amount": "40.00"})
    await api.post("/accounts/a1/freeze", json={"reason": "check"})

    r = await api.get("/accounts/a1/state", params={"version": 3})
    assert r.status_code == 200
    assert (r.json()["balance"], r.json()["status"], r.json()["version"]) == ("100.00", "active", 3)
    r = await api.get("/accounts/a1/state", params={"at": after_credit})
    assert r.json()["balance"] == "100.00"
    r = await api.get("/accounts/a1/state", params={"at": "2000-01-01T00:00:00Z"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "not_yet_created")
    assert (await api.get("/accounts/a1/state")).status_code == 422

    r = await api.get("/accounts/a1/balance-history", params={"from": "2000-01-01T00:00:00Z"})
    body = r.json()
    assert body["openingBalance"] == "0.00" and body["closingBalance"] == "60.00"
    assert [(p["kind"], p["balance"]) for p in body["points"]] == [
        ("credit", "100.00"),
        ("debit", "60.00"),
    ]

    r = await api.get("/reports/accounts", params={"at": after_credit})
    report = r.json()
    balances = {a["accountId"]: a["balance"] for a in report["accounts"]}
    assert balances["a1"] == "100.00"
    r = await api.get(
        "/reports/accounts", params={"at": "2999-01-01T00:00:00Z", "status": "frozen"}
    )
    assert [a["accountId"] for a in r.json()["accounts"]] == ["a1"]
    assert r.json()["totals"] == {"EUR": "60.00"}
    assert (
        await api.get("/reports/accounts", "cust1", params={"at": after_credit})
    ).status_code == 403
