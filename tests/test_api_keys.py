"""API keys that expire, rotate, get revoked everywhere within a second, record their last
use and are rate limited; every key change is in the audit trail with who and why."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from api_helpers import Api, api_client
from cli_helpers import esmongo
from esmongo.api import ApiKeys, Role
from esmongo.api.rate_limit import RateLimiter, retry_after
from esmongo.codec import CODEC_OPTIONS
from esmongo.events import utc_now
from esmongo.ops.audit import AuditTrail
from esmongo.store import EventStore

Db = AsyncDatabase[dict[str, Any]]


class Clock:
    """Monotonic seconds and wall time that only move when told to."""

    def __init__(self) -> None:
        self.seconds = 1000.0
        self.wall = utc_now()

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
async def api(db: Db) -> AsyncIterator[Api]:
    async with api_client(db) as client:
        yield client


def keys_at(db: Db, clock: Clock) -> ApiKeys:
    return ApiKeys(db, clock=clock.monotonic, now=clock.now)


async def audit_trail(db: Db) -> list[Any]:
    return [e async for e in AuditTrail(EventStore(db)).read()]


async def test_a_key_expires_exactly_when_it_says(db: Db) -> None:
    clock = Clock()
    keys = keys_at(db, clock)
    await keys.init()
    key = await keys.create(Role.TELLER, "t1", expires_in=timedelta(hours=1))
    assert (await keys.verify(key)) is not None
    clock.advance(3599)
    assert (await keys.verify(key)) is not None
    clock.advance(1)  # expiry is checked against the cached expiry time on every request
    assert (await keys.verify(key)) is None


async def test_rotation_keeps_the_old_key_for_its_grace_period(db: Db) -> None:
    clock = Clock()
    keys = keys_at(db, clock)
    await keys.init()
    old = await keys.create(Role.CUSTOMER, "c1", "Customer", rate_limit=5)
    new = await keys.rotate(old[:12], grace=timedelta(minutes=10))
    assert new != old
    who = await keys.verify(new)
    assert who is not None
    assert (who.user_id, who.role, who.rate_limit) == ("c1", Role.CUSTOMER, 5)
    assert (await keys.verify(old)) is not None
    clock.advance(600)
    assert (await keys.verify(old)) is None and (await keys.verify(new)) is not None
    (listed_old,) = [k for k in await keys.list(include_unusable=True) if k.prefix == old[:12]]
    assert listed_old.rotated_to == new[:12]
    with pytest.raises(LookupError, match="no usable API key"):
        await keys.rotate(old[:12], grace=timedelta(minutes=1))  # expired: cannot rotate
    with pytest.raises(ValueError, match="grace must be a positive duration"):
        await keys.rotate(new[:12], grace=timedelta(0))


async def test_a_revocation_reaches_another_process_within_a_second(
    server_uri: str, db: Db
) -> None:
    other: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server_uri)
    try:
        clock_a, clock_b = Clock(), Clock()
        here = keys_at(db, clock_a)
        await here.init()
        there = keys_at(other.get_database(db.name, codec_options=CODEC_OPTIONS), clock_b)
        key = await here.create(Role.ADMIN, "a1")
        assert (await there.verify(key)) is not None  # cached there from now on
        assert await here.revoke(key[:12])
        assert (await here.verify(key)) is None  # at once where it was revoked
        clock_b.advance(0.5)
        assert (await there.verify(key)) is not None  # still within its cache time
        clock_b.advance(0.5)
        assert (await there.verify(key)) is None  # a second after: refused everywhere
        assert not await here.revoke(key[:12])  # revoked once only
    finally:
        await other.close()


async def test_last_use_is_recorded_at_most_once_a_minute(db: Db) -> None:
    clock = Clock()
    keys = keys_at(db, clock)
    await keys.init()
    key = await keys.create(Role.AUDITOR, "au1")
    (before,) = await keys.list()
    assert before.last_used_at is None
    await keys.verify(key)
    first = (await keys.list())[0].last_used_at
    assert first == clock.wall
    clock.advance(30)
    await keys.verify(key)
    assert (await keys.list())[0].last_used_at == first  # not a write per request
    clock.advance(30)
    await keys.verify(key)
    assert (await keys.list())[0].last_used_at == clock.wall


async def test_bad_key_settings_are_refused(db: Db) -> None:
    keys = ApiKeys(db)
    with pytest.raises(ValueError, match="expires_in must be a positive duration"):
        await keys.create(Role.ADMIN, "a", expires_in=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="rate_limit must be a positive number"):
        await keys.create(Role.ADMIN, "a", rate_limit=0)
    assert await db.api_keys.count_documents({}) == 0


def test_the_token_bucket_refills_at_the_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("k", 2) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("k", 2) == pytest.approx(0.5)
    assert limiter.take("other", 2) == 0.0  # per key
    now[0] += 0.5
    assert limiter.take("k", 2) == 0.0
    assert retry_after(0.01) == "1" and retry_after(1.2) == "2"


async def test_a_key_over_its_rate_gets_429_with_retry_after(api: Api) -> None:
    now = [0.0]
    api.services.limiter = RateLimiter(clock=lambda: now[0])
    api.services.rate_limit = 2
    assert (await api.get("/events", "auditor")).status_code == 200
    assert (await api.get("/events", "auditor")).status_code == 200
    refused = await api.get("/events", "auditor")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "rate_limited"
    assert (await api.get("/events", "admin")).status_code == 200  # each key its own bucket
    now[0] += 0.5
    assert (await api.get("/events", "auditor")).status_code == 200


async def test_keys_over_http_with_the_audit_trail(api: Api, db: Db) -> None:
    body = {"role": "teller", "userId": "t9", "userName": "Teller Nine", "expiresInSeconds": 3600}
    assert (await api.post("/keys", "teller", json=body)).status_code == 403
    assert (await api.post("/keys", "auditor", json=body)).status_code == 403
    created = await api.post("/keys", json=body, headers={"X-Audit-Reason": "new hire"})
    assert created.status_code == 201, created.text
    key, prefix = created.json()["key"], created.json()["prefix"]
    mine = {"Authorization": f"Bearer {key}"}
    assert (await api.http.get("/accounts/x/history", headers=mine)).status_code == 404

    listed = await api.get("/keys", "auditor")
    assert listed.status_code == 200
    (info,) = [k for k in listed.json() if k["prefix"] == prefix]
    assert info["userId"] == "t9" and info["expiresAt"] is not None and "key" not in info

    rotated = await api.post(f"/keys/{prefix}/rotate", json={"graceSeconds": 60})
    assert rotated.status_code == 200 and rotated.json()["replaces"] == prefix
    revoked = await api.post(f"/keys/{prefix}/revoke", headers={"X-Audit-Reason": "left"})
    assert revoked.status_code == 200
    api.services.keys._cache.clear()  # this process: at once (the cache is per process)
    refused = await api.http.get("/accounts/x/history", headers=mine)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    assert (await api.post(f"/keys/{prefix}/revoke")).status_code == 404
    assert (
        await api.post("/keys/esk_nothere0/rotate", json={"graceSeconds": 1})
    ).status_code == 404
    bad = await api.post("/keys", json=body | {"expiresInSeconds": 0})
    assert bad.status_code == 422

    trail = await audit_trail(db)
    assert [e.event_type for e in trail] == ["ApiKeyCreated", "ApiKeyRotated", "ApiKeyRevoked"]
    assert trail[0].data["by"] == {
        "userId": "admin1",
        "userName": "admin1",
        "via": "api",
        "role": "admin",
        "keyPrefix": api.keys["admin"][:12],
    }
    assert trail[0].data["reason"] == "new hire" and trail[0].data["details"]["prefix"] == prefix
    assert trail[2].data["reason"] == "left" and "reason" not in trail[1].data
    recent = await AuditTrail(EventStore(db)).recent(2)
    assert [e.event_type for e in recent] == ["ApiKeyRevoked", "ApiKeyRotated"]


async def test_unknown_audit_actions_are_refused(db: Db) -> None:
    from esmongo.ops.audit import Actor

    with pytest.raises(ValueError, match="unknown audit action 'Oops'"):
        await AuditTrail(EventStore(db)).record("Oops", Actor("u", "u", "api"))
    assert await db.events.count_documents({}) == 0


async def test_the_cli_manages_keys_and_records_the_shell_user(server_uri: str, db: Db) -> None:
    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return esmongo(server_uri, db, "keys", *args)

    created = keys(
        "create",
        "--role",
        "auditor",
        "--user",
        "au7",
        "--expires-in",
        "90d",
        "--reason",
        "audit 2026",
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("esk_")
    listed = keys("list")
    assert key[:12] in listed.stdout and "au7" in listed.stdout
    bad = keys("create", "--role", "auditor", "--user", "x", "--expires-in", "soon")
    assert bad.returncode == 2 and "--expires-in must be a positive duration" in bad.stderr
    assert keys("revoke", key[:12]).returncode == 0
    again = keys("revoke", key[:12])
    assert again.returncode == 1 and "no unrevoked API key" in again.stderr
    assert key[:12] not in keys("list").stdout and key[:12] in keys("list", "--all").stdout

    trail = await audit_trail(db)
    assert [e.event_type for e in trail] == ["ApiKeyCreated", "ApiKeyRevoked"]
    assert trail[0].data["by"]["via"] == "cli" and trail[0].data["reason"] == "audit 2026"
