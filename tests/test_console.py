"""The console without a browser: the store queries its pages use, the causation tree, the
audit trail, and its HTTP rules (login redirects, headers, CSRF, bounded stream reads).
The browser tests are in test_console_browser.py."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import EventStore, NewEvent
from esmongo.api import Role, create_app
from esmongo.api.app import Starter, run_projection_daemon
from esmongo.api.context import Services
from esmongo.bank import ActivateAccount, CreateAccount, CreditAccount, DebitAccount
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.console import mount
from esmongo.console.causation import causation_tree
from esmongo.events import RecordedEvent
from esmongo.ops.audit import Action
from esmongo.projections import DeadLetters
from esmongo.projections.dead_letters import Failure
from esmongo.schema.registry import Upcasters

Db = AsyncDatabase[dict[str, Any]]
T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


async def test_stream_ids_by_prefix_and_page_and_event_counts(db: Db) -> None:
    store = EventStore(db)
    await store.init()
    for ident in ("b2", "a1", "a3", "a2"):
        await store.append("thing", ident, [NewEvent("made", {}), NewEvent("changed", {})])
    await store.append("other", "a9", [NewEvent("made", {})])
    assert await store.stream_ids("thing", "a") == ["a1", "a2", "a3"]
    assert await store.stream_ids("thing", "a", after="a1", limit=1) == ["a2"]
    assert await store.stream_ids("thing") == ["a1", "a2", "a3", "b2"]
    assert await store.stream_ids("thing", "z") == []
    assert await store.event_counts() == (9, 0)
    await store.archive_stream("thing", "b2")
    assert await store.event_counts() == (7, 2)
    assert await store.stream_ids("thing") == ["a1", "a2", "a3", "b2"]  # archived too


async def test_stored_document_is_the_event_before_upcasting(db: Db) -> None:
    upcasters = Upcasters()
    upcasters.register("renamed", "1.0", "2.0", lambda data: {**data, "full": data["name"]})
    store = EventStore(db, upcasters=upcasters)
    await store.init()
    (event,) = await store.append("person", "p1", [NewEvent("renamed", {"name": "Ada"})])
    read = await store.find_event(event.event_id)
    assert read is not None and read.event_version == "2.0" and read.upcast_from == "1.0"
    raw = await store.stored_document(event.event_id)
    assert raw is not None and raw["eventVersion"] == "1.0" and "full" not in raw["data"]
    assert await store.stored_document("evt_missing") is None


def _event(event_id: str, sequence: int, cause: str | None) -> RecordedEvent:
    metadata = {"correlationId": "c"} | ({"causationId": cause} if cause else {})
    return RecordedEvent(
        event_id, "e", "1.0", "s", event_id, 1, {}, metadata, T0, sequence=sequence
    )


def test_causation_tree_hangs_each_event_under_its_cause() -> None:
    events = [
        _event("credit", 3, "debit"),
        _event("debit", 2, "cmd_1"),
        _event("fee", 4, "cmd_1"),
        _event("audit", 5, "credit"),
        _event("alone", 1, None),
    ]
    roots = causation_tree(events)

    def shape(node: Any) -> Any:
        name = node.event.event_id if node.event else node.label
        return (name, [shape(c) for c in node.children])

    assert [shape(r) for r in roots] == [
        ("alone", []),
        ("caused by cmd_1", [("debit", [("credit", [("audit", [])])]), ("fee", [])]),
    ]


class Finds(monitoring.CommandListener):
    """The find commands sent to the events collection, with their filters."""

    def __init__(self) -> None:
        self.finds: list[Document] = []
        self.get_mores = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command["find"] == "events":
            self.finds.append(event.command)
        if event.command_name == "getMore":
            self.get_mores += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class Console:
    def __init__(self, http: httpx.AsyncClient, services: Services, keys: dict[str, str]) -> None:
        self.http, self.services, self.keys = http, services, keys

    async def login(self, who: str) -> str:
        """Logs in; returns the session's CSRF token (as a form holds it)."""
        form = await self.http.get("/login")
        token = re.search(r'name="token" value="([^"]+)"', form.text)
        assert token is not None
        r = await self.http.post(
            "/login", data={"key": self.keys[who], "token": token.group(1), "next": "/ui/schemas"}
        )
        assert r.status_code == 303 and r.headers["location"] == "/ui/schemas"
        page = await self.http.get("/ui/projections/accounts_read/confirm?action=rebuild")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        return csrf.group(1) if csrf else ""


@pytest.fixture
async def console(server_uri: str, db: Db) -> AsyncIterator[tuple[Console, Finds]]:
    async with serving(server_uri, db) as served:
        yield served


@pytest.fixture
async def console_with_projections(server_uri: str, db: Db) -> AsyncIterator[tuple[Console, Finds]]:
    async with serving(server_uri, db, run_projection_daemon) as served:
        yield served


@contextlib.asynccontextmanager
async def serving(
    server_uri: str, db: Db, background: Starter | None = None
) -> AsyncIterator[tuple[Console, Finds]]:
    finds = Finds()
    client: AsyncMongoClient[Document] = AsyncMongoClient(server_uri, event_listeners=[finds])
    database = client.get_database(db.name, codec_options=CODEC_OPTIONS)
    app = create_app(db=database, background=background)
    mount(app)
    try:
        async with app.router.lifespan_context(app):
            svc: Services = app.state.services
            keys = {
                "admin": await svc.keys.create(Role.ADMIN, "admin1"),
                "auditor": await svc.keys.create(Role.AUDITOR, "auditor1"),
            }
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield Console(http, svc, keys), finds
    finally:
        await client.close()


async def test_unauthenticated_requests_go_to_login_and_headers_are_strict(
    console: tuple[Console, Finds],
) -> None:
    c, _ = console
    r = await c.http.get("/ui/streams?type=account&q=a")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/ui/streams%3Ftype%3Daccount%26q%3Da"
    form = await c.http.get(r.headers["location"])  # the form sends the whole path back
    assert 'name="next" value="/ui/streams?type=account&amp;q=a"' in form.text
    live = await c.http.get("/ui/tail/events?after=0")
    assert live.status_code == 401  # an EventSource is not redirected to a form
    assert (await c.http.post("/ui/dead-letters/retry-all")).status_code == 401
    login = await c.http.get("/login")
    assert "script-src 'self'" in login.headers["content-security-policy"]
    assert "'unsafe-inline'" not in login.headers["content-security-policy"]
    assert login.headers["x-frame-options"] == "DENY"
    api = await c.http.get("/healthz")  # the API keeps its answers, with the headers too
    assert api.json() == {"status": "ok"} and api.headers["x-content-type-options"] == "nosniff"
    docs = await c.http.get("/docs")  # Swagger UI's inline script: no CSP there
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers


async def test_login_goes_only_to_paths_of_this_site(console: tuple[Console, Finds]) -> None:
    c, _ = console
    for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
        form = await c.http.get("/login")
        token = re.search(r'name="token" value="([^"]+)"', form.text)
        assert token is not None
        r = await c.http.post(
            "/login", data={"key": c.keys["auditor"], "token": token.group(1), "next": target}
        )
        assert (r.status_code, r.headers["location"]) == (303, "/")
    forged = await c.http.post(
        "/login", data={"key": c.keys["auditor"], "token": "guessed", "next": "/"}
    )
    assert forged.status_code == 403
    said = await c.http.get("/?notice=Your+account+is+locked")  # only fixed notices show
    assert "locked" not in said.text


async def test_actions_need_the_csrf_token_and_an_operator_and_are_recorded(
    console: tuple[Console, Finds],
) -> None:
    c, _ = console
    token = await c.login("auditor")
    assert token == ""  # an auditor is shown no action form
    refused = await c.http.post("/ui/projections/accounts_read/rebuild", data={"csrf": "x"})
    assert refused.status_code == 403
    token = await c.login("admin")
    assert token
    no_token = await c.http.post("/ui/projections/accounts_read/rebuild")
    wrong = await c.http.post("/ui/projections/accounts_read/rebuild", data={"csrf": "x" + token})
    assert no_token.status_code == wrong.status_code == 403
    assert not c.services.rebuilds
    ok = await c.http.post("/ui/projections/accounts_read/rebuild", data={"csrf": token})
    assert (ok.status_code, ok.headers["location"]) == (303, "/ui/projections?notice=rebuild")
    await c.services.rebuilds["accounts_read"]
    (logged,) = await c.services.audit.recent()
    assert logged.event_type == "ProjectionRebuildStarted"
    assert logged.data == {
        "by": {
            "userId": "admin1",
            "userName": "admin1",
            "via": "console",
            "role": "admin",
            "keyPrefix": c.keys["admin"][:12],
        },
        "details": {"projection": "accounts_read"},
    }


async def test_a_stream_page_reads_one_version_range(console: tuple[Console, Finds]) -> None:
    c, finds = console
    store = EventStore(c.services.bank.db)
    events = [NewEvent("made", {"n": i}) for i in range(400)]
    await store.append("thing", "long", events)
    await c.login("auditor")
    finds.finds.clear()
    finds.get_mores = 0
    page = await c.http.get("/ui/streams/thing/long?from=201")
    assert page.status_code == 200
    assert page.text.count("made</a>") == 50 and "{&#34;n&#34;: 200}" in page.text
    ranged = [f for f in finds.finds if "aggregateVersion" in f.get("filter", {})]
    assert [f["filter"]["aggregateVersion"] for f in ranged] == [{"$gte": 201, "$lte": 250}]
    assert finds.get_mores == 0
    assert 'href="?from=351"' in page.text  # the last page: versions 351..400


async def test_api_operations_are_recorded_with_who_did_them(db: Db) -> None:
    app = create_app(db=db)
    async with app.router.lifespan_context(app):
        svc: Services = app.state.services
        key = await svc.keys.create(Role.ADMIN, "ops7", "Ops Seven")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            auth = {"Authorization": f"Bearer {key}"}
            r = await http.post("/projections/transactions_read/replay", headers=auth)
            assert r.status_code == 202 and r.json() == {
                "projection": "transactions_read",
                "replay": "started",
            }
            await svc.rebuilds["transactions_read"]
            again = await http.post("/projections/transactions_read/replay", headers=auth)
            assert again.status_code == 202
            r = await http.post("/projections/transactions_read/rebuild", headers=auth)
            assert r.status_code in (202, 409)  # 409 while the replay still runs
            await svc.rebuilds["transactions_read"]
        recent = [Action.of(e) for e in await svc.audit.recent()]
    seen = [(o.action, o.target, o.user_id, o.source) for o in reversed(recent)]
    target = "projection=transactions_read"
    started = [
        ("ProjectionReplayed", target, "ops7", "api"),
        ("ProjectionReplayed", target, "ops7", "api"),
        ("ProjectionRebuildStarted", target, "ops7", "api"),
    ]
    assert seen in (started, started[:2])  # the rebuild is refused while the replay runs


async def test_retry_and_discard_all_shown_are_checked_and_recorded(
    console_with_projections: tuple[Console, Finds],
) -> None:
    c, _ = console_with_projections
    bank = c.services.bank
    await bank.store.append(
        "account",
        "dl1",
        [NewEvent("account.created", {"ownerId": "u", "ownerName": "U", "currency": "EUR"})],
    )
    await bank.queries.wait_until_current(30)  # applied, checkpoints written
    events = [e async for e in bank.store.read_all(0)]
    dead = DeadLetters(bank.db)
    for name in ("transactions_read", "accounts_read"):
        await dead.record(Failure(events[0], ValueError("boom"), 1), name, "skip")
    token = await c.login("admin")
    listed = await c.http.get("/ui/dead-letters")
    assert listed.text.count("boom") == 2 and listed.text.count('class="retry"') == 2
    only = await c.http.get("/ui/dead-letters?projection=accounts_read")
    assert only.text.count("boom") == 1
    r = await c.http.post(
        "/ui/dead-letters/retry-all?projection=accounts_read", data={"csrf": token}
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/dead-letters?notice=retried-all"
    assert await dead.count() == 1  # only accounts_read's was retried (applied again)
    r = await c.http.post("/ui/dead-letters/discard-all", data={"csrf": token})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/dead-letters?notice=discarded-all"
    assert await dead.count() == 0
    recent = [Action.of(e) for e in await c.services.audit.recent()]
    sequence = events[0].sequence
    assert [(o.action, o.target, o.source) for o in reversed(recent)] == [
        ("DeadLetterRetried", f"projection=accounts_read, sequence={sequence}", "console"),
        ("DeadLetterDiscarded", f"projection=transactions_read, sequence={sequence}", "console"),
    ]


async def test_an_event_page_shows_the_upcast_chain_and_the_stored_document(
    console: tuple[Console, Finds],
) -> None:
    c, _ = console
    store = c.services.bank.store
    store.upcasters.register("thing.named", "1.0", "2.0", lambda d: {**d, "full": d["name"]})
    store.upcasters.register("thing.named", "2.0", "3.0", lambda d: {**d, "v3": True})
    (event,) = await EventStore(c.services.bank.db).append(
        "thing", "t1", [NewEvent("thing.named", {"name": "Ada"})]
    )
    await c.login("auditor")
    page = await c.http.get(f"/ui/events/{event.event_id}")
    assert page.status_code == 200
    assert '<dd id="upcast-chain">v1.0 → v2.0 → v3.0</dd>' in page.text
    data = page.text.split('id="event-data">')[1].split("</pre>")[0]
    raw = page.text.split('id="event-raw">')[1].split("</pre>")[0]
    assert "&#34;full&#34;: &#34;Ada&#34;" in data and "&#34;v3&#34;: true" in data
    assert "&#34;eventVersion&#34;: &#34;1.0&#34;" in raw and "full" not in raw


async def test_the_time_travel_caption_shows_money_as_money(
    console_with_projections: tuple[Console, Finds],
) -> None:
    c, _ = console_with_projections
    bank = c.services.bank
    await bank.handle(CreateAccount("tt1", "u1", "U One", "EUR"))
    await bank.handle(ActivateAccount("tt1"))
    await bank.handle(CreditAccount("tt1", Decimal("500.00"), "c1"))
    await bank.handle(DebitAccount("tt1", Decimal("1.25"), "d1"))
    await bank.queries.wait_until_current(30)
    await c.login("auditor")
    page = await c.http.get("/ui/accounts/tt1/time")
    assert page.status_code == 200
    assert "between 498.75 and 500.00, now 498.75." in page.text  # not 500.0: no float
