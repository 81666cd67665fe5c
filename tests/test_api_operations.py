"""The service with its projection daemon: read-your-writes, status, rebuild, dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from api_helpers import Api, api_client
from esmongo import EventStore, NewEvent
from esmongo.api.app import report_unreachable_versions, run_projection_daemon
from esmongo.ops.audit import AuditTrail


@pytest.fixture
async def api(db: AsyncDatabase[dict[str, Any]]) -> AsyncIterator[Api]:
    async with api_client(db, background=run_projection_daemon) as client:
        yield client


async def test_consistent_read_sees_the_callers_last_write(api: Api) -> None:
    await api.open_account("a1", owner="cust1", funds="10.00")
    for i in range(5):
        r = await api.post("/accounts/a1/credit", json={"amount": "1.00", "transactionId": f"c{i}"})
        assert r.status_code == 200
        view = (await api.get("/accounts/a1", "cust1", params={"consistent": "true"})).json()
        assert view["balance"] == f"{11 + i}.00"
        assert view["lastEventVersion"] == r.json()["version"]
    listed = (await api.get("/accounts", "cust1")).json()["items"]
    assert [a["accountId"] for a in listed] == ["a1"]
    assert (await api.get("/accounts", "auditor", params={"min_balance": "100"})).json()[
        "items"
    ] == []


async def test_projection_status_and_readiness(api: Api) -> None:
    await api.open_account("a1", funds="1.00")
    await api.get("/accounts/a1", params={"consistent": "true"})
    statuses = {s["name"]: s for s in (await api.get("/projections", "auditor")).json()}
    assert set(statuses) == {"accounts_read", "transactions_read", "analytics_hourly"}
    head = await api.services.bank.store.head_sequence()
    assert statuses["accounts_read"]["position"] == head
    assert statuses["accounts_read"]["lagEvents"] == 0
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["projections"] == "running"
    assert (await api.get("/projections", "teller")).status_code == 403


async def test_rebuild_over_http_swaps_in_an_equal_read_model(api: Api) -> None:
    for i in range(3):
        await api.open_account(f"a{i}", funds=f"{i + 1}.00")
    before = (await api.get("/accounts/a2", params={"consistent": "true"})).json()
    r = await api.post("/projections/accounts_read/rebuild")
    assert r.status_code == 202
    assert (await api.post("/projections/accounts_read/rebuild")).status_code in (202, 409)
    task = api.services.rebuilds["accounts_read"]
    await asyncio.wait_for(asyncio.shield(task), 60)
    after = (await api.get("/accounts/a2")).json()
    assert {k: after[k] for k in ("balance", "status", "lastEventVersion")} == {
        k: before[k] for k in ("balance", "status", "lastEventVersion")
    }
    status = {s["name"]: s for s in (await api.get("/projections")).json()}
    assert status["accounts_read"]["generation"] == 1
    r = await api.post("/projections/nope/rebuild")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "projection_not_found")


async def test_dead_letter_endpoints(api: Api) -> None:
    assert (await api.get("/dead-letters", "auditor")).json() == []
    r = await api.post("/dead-letters/accounts_read:999/retry")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "dead_letter_not_found")
    r = await api.http.delete("/dead-letters/accounts_read:999", headers=api.auth("admin"))
    assert r.status_code == 404
    r = await api.http.delete("/dead-letters/accounts_read:1", headers=api.auth("auditor"))
    assert r.status_code == 403
    assert (await api.post("/dead-letters/not-an-id/retry")).status_code == 422


async def test_poison_event_dead_letter_listed_and_discarded(api: Api) -> None:
    await api.open_account("a1", funds="1.00")
    # An event the strict bank would refuse, appended around it: its handler fails.
    raw = EventStore(api.services.bank.db)
    poison = NewEvent("account.credited", {"amount": Decimal("1.00"), "currency": "EUR"})
    (bad,) = await raw.append("account", "a1", [poison])
    ids = {f"{name}:{bad.sequence}" for name in ("accounts_read", "transactions_read")}
    deadline = asyncio.get_running_loop().time() + 30
    while len(letters := (await api.get("/dead-letters", "auditor")).json()) < len(ids):
        assert asyncio.get_running_loop().time() < deadline, letters
        await asyncio.sleep(0.1)
    assert {d["id"] for d in letters} == ids
    assert all("balanceAfter" in d["error"] and d["traceback"] for d in letters)
    only = (await api.get("/dead-letters", params={"projection": "accounts_read"})).json()
    assert [d["id"] for d in only] == [f"accounts_read:{bad.sequence}"]
    r = await api.post(f"/dead-letters/accounts_read:{bad.sequence}/retry")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "retry_failed")
    for letter_id in ids:
        headers = api.auth("admin") | {"X-Audit-Reason": "poison, by hand"}
        r = await api.http.delete(f"/dead-letters/{letter_id}", headers=headers)
        assert r.status_code == 200 and r.json()["discarded"] is True
    assert (await api.get("/dead-letters")).json() == []
    # Each discard is in the audit trail, with who and why; the failed retry is not.
    trail = [e async for e in AuditTrail(raw).read()]
    assert {
        f"{e.data['details']['projection']}:{e.data['details']['sequence']}" for e in trail
    } == ids
    assert all(e.event_type == "DeadLetterDiscarded" for e in trail)
    assert all(
        e.data["by"]["userId"] == "admin1" and e.data["reason"] == "poison, by hand" for e in trail
    )
    # The projection goes on past the discarded event. The log is the truth: the account
    # counted the poison credit, so the next credit's balanceAfter includes it.
    await api.post("/accounts/a1/credit", json={"amount": "2.00"})
    view = (await api.get("/accounts/a1", params={"consistent": "true"})).json()
    assert view["balance"] == "4.00"


async def test_startup_reports_versions_that_cannot_be_upcast(
    db: AsyncDatabase[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    raw = EventStore(db)
    await raw.append("account", "old", [NewEvent("account.renamed", {}, event_version="0.9")])
    await raw.append("account", "new", [NewEvent("account.renamed", {}, event_version="1.0")])
    with caplog.at_level("WARNING", logger="esmongo.api.app"):
        async with api_client(db) as api:
            await report_unreachable_versions(api.services)
    messages = [r.getMessage() for r in caplog.records]
    assert any("account.renamed v0.9" in m and "not to the latest v1.0" in m for m in messages), (
        messages
    )
