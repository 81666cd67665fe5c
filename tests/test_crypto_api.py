"""Crypto-shredding through the bank's service: forgetting a person over HTTP redacts their
name and request metadata in the API, a rebuilt read model, time travel and the console,
while balances and everything else stay; the chain verifies; only admins may forget."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bson
import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo.api import Role, create_app
from esmongo.api.app import run_projection_daemon
from esmongo.api.context import Services
from esmongo.console import mount
from esmongo.ops.check.chain import verify_chain
from esmongo.store.data_keys import MASTER_KEY_ENV, new_master_key
from esmongo.store.personal import REDACTED

Db = AsyncDatabase[dict[str, Any]]


class Service:
    def __init__(self, http: httpx.AsyncClient, svc: Services, keys: dict[str, str]) -> None:
        self.http, self.svc, self.keys = http, svc, keys

    async def call(self, method: str, path: str, who: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} | kwargs.pop("headers", {})
        return await self.http.request(method, path, headers=headers, **kwargs)


@pytest.fixture
async def service(
    db: Db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Service]:
    monkeypatch.setenv(MASTER_KEY_ENV, new_master_key())
    monkeypatch.setenv("ESMONGO_ERASURE_LOG", str(tmp_path / "erasures.jsonl"))
    app = create_app(db=db, background=run_projection_daemon)
    mount(app)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        keys = {
            "admin": await svc.keys.create(Role.ADMIN, "admin1"),
            "teller": await svc.keys.create(Role.TELLER, "teller1", "Tom Teller"),
            "alice": await svc.keys.create(Role.CUSTOMER, "alice", "Alice Smith"),
        }
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield Service(http, svc, keys)


async def test_forgetting_a_person_redacts_them_everywhere_and_keeps_the_money(
    service: Service, db: Db, tmp_path: Path
) -> None:
    s = service
    body = {"accountId": "acc1", "ownerName": "Alice Smith", "currency": "EUR"}
    assert (await s.call("POST", "/accounts", "alice", json=body)).status_code == 201
    assert (await s.call("POST", "/accounts/acc1/activate", "teller")).status_code == 200
    credit = {"amount": "300.00"}
    assert (await s.call("POST", "/accounts/acc1/credit", "teller", json=credit)).status_code == 200
    debit = {"amount": "50.00"}
    assert (await s.call("POST", "/accounts/acc1/debit", "alice", json=debit)).status_code == 200

    created = await db.events.find_one({"eventType": "account.created"})
    assert created is not None
    stored = bson.encode(created)
    assert b"Alice Smith" not in stored and b"192.0.2.7" not in stored
    view = (await s.call("GET", "/accounts/acc1", "teller", params={"consistent": "true"})).json()
    assert view["owner"]["name"] == "Alice Smith"
    events = (await s.call("GET", "/events", "teller")).json()["events"]
    mine = [e for e in events if e["metadata"].get("userId") == "alice"]
    assert mine and {e["metadata"]["userName"] for e in mine} == {"Alice Smith"}
    assert {e["metadata"]["ipAddress"] for e in mine} == {"192.0.2.7"}

    refused = await s.call("POST", "/erasures", "teller", json={"subject": "user:alice"})
    assert refused.status_code == 403
    unknown = await s.call("POST", "/erasures", "admin", json={"subject": "user:nobody"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_subject")
    reason = {"X-Audit-Reason": "GDPR erasure request 42"}
    done = await s.call(
        "POST", "/erasures", "admin", json={"subject": "user:alice"}, headers=reason
    )
    assert done.status_code == 200, done.text
    assert done.json()["keysDeleted"] == 1 and done.json()["already"] is False
    again = await s.call("POST", "/erasures", "admin", json={"subject": "user:alice"})
    assert again.status_code == 200 and again.json()["already"] is True

    # Time travel (replay from the events; the snapshots that cached her name are gone).
    then = (await s.call("GET", "/accounts/acc1/state", "teller", params={"version": 4})).json()
    assert then["owner"] == {"userId": "alice", "name": REDACTED}
    assert then["balance"] == "250.00"
    # The event log.
    events = (await s.call("GET", "/events", "teller")).json()["events"]
    opened = next(e for e in events if e["eventType"] == "account.created")
    assert opened["data"]["ownerName"] == REDACTED and opened["data"]["currency"] == "EUR"
    mine = [e for e in events if e["metadata"].get("userId") == "alice"]
    assert {e["metadata"]["userName"] for e in mine} == {REDACTED}
    assert {e["metadata"]["ipAddress"] for e in mine} == {REDACTED}
    teller = [e for e in events if e["metadata"].get("userId") == "teller1"]
    assert {e["metadata"]["userName"] for e in teller} == {"Tom Teller"}  # not hers
    # The read model, rebuilt.
    rebuild = await s.call("POST", "/projections/accounts_read/rebuild", "admin")
    assert rebuild.status_code == 202
    await s.svc.rebuilds["accounts_read"]
    view = (await s.call("GET", "/accounts/acc1", "teller", params={"consistent": "true"})).json()
    assert view["owner"]["name"] == REDACTED and view["balance"] == "250.00"

    assert (await verify_chain(db)).ok
    audit = [e for e in (await s.call("GET", "/events", "admin")).json()["events"]]
    forgotten = [e for e in audit if e["eventType"] == "DataSubjectForgotten"]
    assert [e["data"].get("reason") for e in forgotten] == ["GDPR erasure request 42", None]
    assert forgotten[0]["data"]["by"]["userId"] == "admin1"
    assert "Alice Smith" not in str(forgotten)
    assert (tmp_path / "erasures.jsonl").read_text().count("user:alice") == 1

    # The console's event page: the clear view redacted, the stored one still ciphertext.
    await login(s, "admin")
    page = await s.http.get(f"/ui/events/{created['eventId']}")
    assert page.status_code == 200
    data = page.text.split('id="event-data">')[1].split("</pre>")[0]
    raw = page.text.split('id="event-raw">')[1].split("</pre>")[0]
    assert f"&#34;ownerName&#34;: &#34;{REDACTED}&#34;" in data
    assert "&#34;_enc&#34;: &#34;aes-gcm&#34;" in raw and "Alice" not in page.text


async def login(s: Service, who: str) -> None:
    form = await s.http.get("/login")
    token = re.search(r'name="token" value="([^"]+)"', form.text)
    assert token is not None
    r = await s.http.post("/login", data={"key": s.keys[who], "token": token.group(1), "next": "/"})
    assert r.status_code == 303
