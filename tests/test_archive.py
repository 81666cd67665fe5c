"""Archiving closed streams: moved whole to `events_archive`, still read everywhere, never
written to again; the global sequence stays gap-free."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner

from api_helpers import Api, api_client
from esmongo import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AggregateNotFoundError,
    AppendRequest,
    ConcurrencyError,
    EventStore,
    NewEvent,
    RecordedEvent,
)
from esmongo.api.app import run_projection_daemon
from esmongo.bank import (
    Account,
    AccountNotClosed,
    ActivateAccount,
    Bank,
    CloseAccount,
    CreateAccount,
    CreditAccount,
    DebitAccount,
    TransferFunds,
    balance_history,
    bank_projections,
)
from esmongo.cli import app as cli_app
from esmongo.errors import StreamArchived
from esmongo.model import TemporalQueries
from esmongo.projections import replay
from esmongo.store import archive as archive_module
from projection_helpers import all_events, assert_same, fold, read_models

Db = AsyncDatabase[dict[str, Any]]


async def closed_account(bank: Bank, account_id: str, movements: int = 5) -> None:
    """An account with some history, emptied and closed."""
    assert (await bank.handle(CreateAccount(account_id, "u1", "User", "EUR"))).success
    assert (await bank.handle(ActivateAccount(account_id))).success
    for n in range(movements):
        assert (await bank.handle(CreditAccount(account_id, Decimal("10.00"), f"c{n}"))).success
    total = Decimal("10.00") * movements
    assert (await bank.handle(DebitAccount(account_id, total, "empty"))).success
    assert (await bank.handle(CloseAccount(account_id, "moved away"))).success


async def open_account(bank: Bank, account_id: str, funds: str = "100.00") -> None:
    assert (await bank.handle(CreateAccount(account_id, "u2", "Other", "EUR"))).success
    assert (await bank.handle(ActivateAccount(account_id))).success
    assert (await bank.handle(CreditAccount(account_id, Decimal(funds), "seed"))).success


@pytest.fixture
async def bank(db: Db) -> Bank:
    return await Bank(db, snapshot_every=3).init()


async def stream_docs(db: Db, collection: str, account_id: str) -> list[dict[str, Any]]:
    cursor = db[collection].find({"aggregateId": account_id}, sort=[("sequence", 1)])
    return [doc async for doc in cursor]


async def test_archive_moves_every_event_unchanged(bank: Bank, db: Db) -> None:
    await open_account(bank, "keep")
    await closed_account(bank, "gone")
    await open_account(bank, "after")
    before = await stream_docs(db, "events", "gone")
    head = await bank.store.head_sequence()
    total = await db["events"].count_documents({})

    report = await bank.archive_account("gone")

    assert not report.already and report.events == len(before) == 9
    assert report.version == 9 and report.snapshot_kept
    assert (report.first_sequence, report.last_sequence) == (
        before[0]["sequence"],
        before[-1]["sequence"],
    )
    assert await stream_docs(db, "events", "gone") == []
    assert await stream_docs(db, "events_archive", "gone") == before  # ids, metadata, all
    assert await db["events"].count_documents({}) == total - len(before)
    counter = await db["counters"].find_one({"_id": "event_sequence"})
    assert counter is not None and counter["value"] == head and counter["archives"] == 1
    record = await db["archived_streams"].find_one({"aggregateId": "gone"})
    assert record is not None and record["version"] == 9 and record["number"] == 1
    snapshot = await db["snapshots"].find_one({"aggregateId": "gone"})
    assert snapshot is not None and snapshot["version"] == 9 and "expiresAt" not in snapshot
    indexes = {ix["name"] async for ix in await db["events_archive"].list_indexes()}
    assert {"aggregate_ordering", "event_id", "global_sequence", "correlation"} <= indexes

    again = await bank.archive_account("gone")  # idempotent
    assert again.already and again.events == 9 and again.number == 1
    assert await stream_docs(db, "events_archive", "gone") == before


async def read_everything(bank: Bank, account_id: str, at: datetime) -> dict[str, Any]:
    store = bank.store
    temporal = TemporalQueries(store, Account, snapshots=bank.snapshots)
    plain = TemporalQueries(store, Account)
    loaded = await bank.accounts.load(account_id)
    fresh = bank.accounts.__class__(store, Account)  # no snapshots: a full replay
    replayed = await fresh.load(account_id)
    then = await plain.state_at(account_id, at=at)
    at_v3 = await temporal.state_at(account_id, version=3)
    history = await balance_history(store, account_id, at - timedelta(days=1), at)
    everyone = [(a.id, a.version, a.balance) async for a in plain.aggregates_at(at)]
    first = await anext(store.read_stream("account", account_id))
    assert then is not None and at_v3 is not None
    return {
        "stream": [e async for e in store.read_stream("account", account_id)],
        "middle": [e async for e in store.read_stream("account", account_id, 2, 4)],
        "loaded": (loaded.version, loaded.balance, loaded.status),
        "replayed": (replayed.version, replayed.balance, replayed.status),
        "then": (then.version, then.balance, then.status),
        "v3": (at_v3.version, at_v3.balance),
        "history": history,
        "everyone": everyone,
        "version": await store.stream_version("account", account_id),
        "by_id": await store.find_event(first.event_id),
        "by_type": [e async for e in store.read_by_type("account.credited")],
        "by_correlation": [
            e async for e in store.read_by_correlation(str(first.metadata.get("correlationId")))
        ],
    }


async def test_reads_of_an_archived_stream_equal_those_before(bank: Bank) -> None:
    await closed_account(bank, "gone", movements=6)
    await open_account(bank, "other")
    # The middle of the stream in time, then the end.
    stream = [e async for e in bank.store.read_stream("account", "gone")]
    at = stream[4].timestamp
    before = await read_everything(bank, "gone", at)
    end = datetime.now(UTC)
    before_end = await read_everything(bank, "gone", end)
    all_before = [e async for e in bank.store.read_all()]

    await bank.archive_account("gone")
    fresh = await Bank(bank.db, snapshot_every=3).init()
    for reader in (bank, fresh):
        assert await read_everything(reader, "gone", at) == before
        assert await read_everything(reader, "gone", end) == before_end
        assert [e async for e in reader.store.read_all()] == all_before
    assert before["stream"] and before["history"].points


async def test_read_all_across_archived_events_is_gap_free_in_pages(bank: Bank) -> None:
    for i in range(4):
        await closed_account(bank, f"gone{i}", movements=3)
        await open_account(bank, f"open{i}")
    full = [e async for e in bank.store.read_all()]
    for i in (0, 2, 3):
        await bank.archive_account(f"gone{i}")
    assert [e async for e in bank.store.read_all()] == full
    assert [e.sequence for e in full] == list(range(1, len(full) + 1))
    for size in (1, 3, 7):  # pages that start and end inside archived runs
        paged: list[RecordedEvent] = []
        while True:
            page = [
                e
                async for e in bank.store.read_all(
                    paged[-1].sequence if paged else 0, size, batch_size=size
                )
            ]
            paged += page
            if len(page) < size:
                break
        assert paged == full, size
    credited = [e for e in full if e.event_type == "account.credited"]
    got = [e async for e in bank.store.read_all(5, event_types=["account.credited"], batch_size=2)]
    assert got == [e for e in credited if e.sequence > 5]


async def test_a_projection_rebuild_after_archiving_gives_the_same_read_models(
    bank: Bank, db: Db
) -> None:
    for i in range(3):
        await closed_account(bank, f"gone{i}")
        await open_account(bank, f"open{i}")
    assert (await bank.handle(TransferFunds("open0", "open1", Decimal("5.00"), "t1"))).success
    events = await all_events(bank.store)
    for projection in bank_projections():
        await replay(bank.store, projection)
    expected = await read_models(db)
    assert expected["accounts_read"]["gone1"]["status"] == "closed"
    assert len(expected["transactions_read"]) == len(fold(events)["transactions_read"])

    for i in range(3):
        await bank.archive_account(f"gone{i}")
    assert await all_events(bank.store) == events
    for projection in bank_projections():
        await replay(bank.store, projection, batch_size=4)
    assert_same(expected, await read_models(db))


async def test_appends_to_an_archived_stream_are_refused_in_every_mode(bank: Bank, db: Db) -> None:
    await closed_account(bank, "gone")
    writer = EventStore(db)  # has seen the stream: remembers version 9
    assert await writer.stream_version("account", "gone") == 9
    await bank.archive_account("gone")
    head = await bank.store.head_sequence()
    count = await db["events"].count_documents({})
    unbatched = EventStore(db, group_commit=False)
    for store in (writer, unbatched, EventStore(db)):
        for expected in (NO_STREAM, ANY, STREAM_EXISTS, 0, 1, 9, 10):
            with pytest.raises(StreamArchived) as caught:
                await store.append("account", "gone", [NewEvent("x.happened", {})], expected)
            assert caught.value.code == "stream_archived"
    # Several streams, all or nothing: the healthy one is not written either.
    with pytest.raises(StreamArchived):
        await EventStore(db).append_streams(
            [
                request("fine", NO_STREAM),
                request("gone", ANY),
            ]
        )
    assert await bank.store.head_sequence() == head
    assert await db["events"].count_documents({}) == count
    assert await db["events"].count_documents({"aggregateId": "gone"}) == 0
    # A command on the archived account is refused as before (it is closed) or as archived.
    result = await bank.handle(CreateAccount("gone", "u1", "User", "EUR"))
    assert not result.success and result.error is not None
    assert result.error.code == "account_exists"
    # An idempotent retry of an append recorded before the archive is still answered.
    created = await anext(bank.store.read_stream("account", "gone", 1, 1))
    retry = NewEvent(created.event_type, dict(created.data), event_id=created.event_id)
    replayed = await EventStore(db).append("account", "gone", [retry], NO_STREAM)
    assert replayed[0].replayed and replayed[0].sequence == created.sequence


@pytest.mark.parametrize("mirrored", [True, False], ids=["in-memory", "over-capacity"])
async def test_a_writer_learns_of_archives_made_elsewhere(
    bank: Bank, db: Db, mirrored: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write path keeps the archived streams in memory, by archive number; an archive
    made by another process after it loaded them is seen in the next transaction."""
    if not mirrored:
        monkeypatch.setattr(archive_module, "MIRROR_CAPACITY", 0)
    writer = EventStore(db)
    await closed_account(bank, "first")
    await bank.archive_account("first")
    with pytest.raises(StreamArchived):
        await writer.append("account", "first", [NewEvent("x.happened", {})], NO_STREAM)
    await writer.append("account", "fresh", [NewEvent("x.happened", {})], NO_STREAM)
    await closed_account(bank, "second")
    await bank.archive_account("second")  # by another store, after the writer's last look
    for expected in (NO_STREAM, ANY):
        with pytest.raises(StreamArchived):
            await writer.append("account", "second", [NewEvent("x.happened", {})], expected)
    assert await db["events"].count_documents({"aggregateId": {"$in": ["first", "second"]}}) == 0
    assert (await writer.append("account", "fresh", [NewEvent("x.happened", {})], 1))[0]


def request(account_id: str, expected: Any) -> AppendRequest:
    return AppendRequest("account", account_id, [NewEvent("x.happened", {})], expected)


async def test_an_archive_between_the_version_check_and_the_transaction_is_caught(
    bank: Bank, db: Db
) -> None:
    """An exact-version append checked its version before the stream moved: the counter's
    archive number tells the transaction, which then looks the stream up."""
    await closed_account(bank, "gone")
    await open_account(bank, "other")
    store = EventStore(db)
    await store.append("account", "other", [NewEvent("x.happened", {})], ANY)  # archives known
    check = store.versions.check

    async def check_then_archive(requests: Any) -> Any:
        heads = await check(requests)
        if any(r.aggregate_id == "gone" for r in requests):
            await bank.archive_account("gone")  # another process, right after the check
        return heads

    store.versions.check = check_then_archive  # type: ignore[method-assign]
    head = await store.head_sequence()
    with pytest.raises(StreamArchived):
        await store.append("account", "gone", [NewEvent("x.happened", {})], 9)
    assert await store.head_sequence() == head
    assert await db["events"].count_documents({"aggregateId": "gone"}) == 0
    assert await db["events_archive"].count_documents({"aggregateId": "gone"}) == 9


@pytest.mark.parametrize("wrote_since", [False, True])
async def test_an_archive_after_this_process_wrote_the_stream_is_not_taken_on_trust(
    bank: Bank, db: Db, wrote_since: bool
) -> None:
    """The store appends to a stream it wrote with no query (ADR 0013). Another process
    archives it: the archive moved the counter's generation, so the append's transaction
    refuses the remembered head (or, when this store wrote elsewhere since and so knows
    the new generation, the head is confirmed by query), and the archive is found."""
    await closed_account(bank, "gone")  # written by bank.store: it remembers version 9
    await open_account(bank, "other")
    assert await (await Bank(db).init()).archive_account("gone") is not None  # elsewhere
    if wrote_since:
        await bank.store.append("account", "other", [NewEvent("account.activated", {})], ANY)
    head = await bank.store.head_sequence()
    with pytest.raises(StreamArchived):
        await bank.store.append("account", "gone", [NewEvent("account.activated", {})], 9)
    assert await bank.store.head_sequence() == head
    assert await db["events"].count_documents({"aggregateId": "gone"}) == 0


async def test_archives_and_concurrent_appends_lose_nothing(bank: Bank, db: Db) -> None:
    for i in range(6):
        await closed_account(bank, f"gone{i}", movements=2)
    writers = [EventStore(db) for _ in range(3)]  # other "processes"
    appended: list[RecordedEvent] = []

    async def append(store: EventStore, n: int) -> None:
        for k in range(15):
            expected = NO_STREAM if k == 0 else k
            appended.extend(
                await store.append("load", f"s{n}", [NewEvent("x.happened", {"k": k})], expected)
            )

    archiving = [bank.archive_account(f"gone{i}") for i in range(6)]
    appending = [append(writers[n % 3], n) for n in range(9)]
    results = await asyncio.gather(*archiving, *appending)
    assert all(not r.already for r in results[:6] if r is not None)
    head = await bank.store.head_sequence()
    events = [e async for e in bank.store.read_all()]
    assert [e.sequence for e in events] == list(range(1, head + 1))
    assert {e.event_id for e in appended} <= {e.event_id for e in events}
    assert len(appended) == 9 * 15
    for i in range(6):
        assert await db["events"].count_documents({"aggregateId": f"gone{i}"}) == 0
        assert await db["events_archive"].count_documents({"aggregateId": f"gone{i}"}) == 6
    counter = await db["counters"].find_one({"_id": "event_sequence"})
    assert counter is not None and counter["archives"] == 6


async def test_only_closed_accounts_are_archived(bank: Bank, db: Db) -> None:
    await open_account(bank, "open")
    with pytest.raises(AccountNotClosed) as refused:
        await bank.archive_account("open")
    assert refused.value.code == "account_not_closed"
    with pytest.raises(AggregateNotFoundError):
        await bank.archive_account("nobody")
    with pytest.raises(AggregateNotFoundError):
        await bank.store.archive_stream("account", "nobody")
    with pytest.raises(ConcurrencyError):
        await bank.store.archive_stream("account", "open", expected_version=1)
    assert await db["events_archive"].count_documents({}) == 0
    assert await db["archived_streams"].count_documents({}) == 0
    assert await bank.store.stream_version("account", "open") == 3


async def test_archive_closed_before_a_date(bank: Bank, db: Db) -> None:
    await closed_account(bank, "old1")
    await closed_account(bank, "old2")
    await open_account(bank, "open")
    cut = datetime.now(UTC) + timedelta(milliseconds=5)
    await asyncio.sleep(0.02)
    await closed_account(bank, "new")
    await bank.archive_account("old2")
    seen: list[tuple[int, int]] = []
    summary = await bank.archive_closed(cut, lambda done, total: seen.append((done, total)))
    assert [r.stream.aggregate_id for r in summary.archived] == ["old1"]
    assert summary.already == 1 and summary.refused == []
    assert seen == [(1, 2), (2, 2)]
    archived = {d["aggregateId"] async for d in db["archived_streams"].find({})}
    assert archived == {"old1", "old2"}


# ---- HTTP and CLI --------------------------------------------------------------------


@pytest.fixture
async def api(db: Db) -> AsyncIterator[Api]:
    async with api_client(db, background=run_projection_daemon) as client:
        yield client


async def test_http_archive_then_every_read_still_works(api: Api) -> None:
    await api.open_account("a1", owner="cust1", funds="25.00")
    assert (await api.post("/accounts/a1/debit", json={"amount": "25.00"})).status_code == 200
    refused = await api.post("/accounts/a1/archive")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "account_not_closed"
    assert (await api.post("/accounts/a1/close")).status_code == 200
    paths = [
        "/accounts/a1?consistent=true",
        "/accounts/a1/history",
        f"/accounts/a1/state?at={datetime.now(UTC).isoformat()}".replace("+", "%2B"),
        "/accounts/a1/state?version=3",
        f"/accounts/a1/balance-history?to={datetime.now(UTC).isoformat()}".replace("+", "%2B"),
    ]
    before = [(await api.get(p)).json() for p in paths]
    assert before[0]["status"] == "closed" and len(before[1]["events"]) == 5

    forbidden = await api.post("/accounts/a1/archive", "teller")
    assert forbidden.status_code == 403
    done = await api.post("/accounts/a1/archive")
    assert done.status_code == 200, done.text
    assert done.json()["events"] == 5 and done.json()["alreadyArchived"] is False
    again = await api.post("/accounts/a1/archive")
    assert again.status_code == 200 and again.json()["alreadyArchived"] is True
    missing = await api.post("/accounts/nobody/archive")
    assert missing.status_code == 404

    after = [(await api.get(p)).json() for p in paths]
    assert after == before
    assert (await api.get("/accounts/a1", "cust1")).status_code == 200  # owner still found
    credit = await api.post("/accounts/a1/credit", json={"amount": "1.00"})
    assert credit.status_code == 409  # closed (and archived)


def cli(server_uri: str, db: Db, *args: str) -> Any:
    env = {**os.environ, "MONGODB_URI": server_uri, "ESMONGO_DB": db.name}
    return CliRunner().invoke(cli_app, list(args), env=env)


async def test_cli_archives_one_account_or_every_closed_one(
    bank: Bank, db: Db, server_uri: str
) -> None:
    await closed_account(bank, "c1")
    await closed_account(bank, "c2")
    await open_account(bank, "o1")
    result = await asyncio.to_thread(cli, server_uri, db, "archive", "o1")
    assert result.exit_code == 1 and "only a closed account" in result.output
    result = await asyncio.to_thread(cli, server_uri, db, "archive", "c1")
    assert result.exit_code == 0, result.output
    assert "c1 archived: 9 events" in result.output
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S")
    result = await asyncio.to_thread(cli, server_uri, db, "archive", "--closed-before", tomorrow)
    assert result.exit_code == 0, result.output
    assert "1 account(s) archived (9 events), 1 already archived" in result.output
    result = await asyncio.to_thread(cli, server_uri, db, "archive")
    assert result.exit_code == 2
    archived = {d["aggregateId"] async for d in db["archived_streams"].find({})}
    assert archived == {"c1", "c2"}


# ---- migration and backup ----------------------------------------------------------


def noted(data: Any) -> Any:
    return {**data, "note": "migrated"}


async def test_a_migration_after_and_during_archiving_verifies_and_switches(
    bank: Bank, db: Db
) -> None:
    from esmongo.ops.migration import Migration, Migrator, active_events_collection

    for i in range(3):
        await closed_account(bank, f"gone{i}", movements=3)
        await open_account(bank, f"open{i}")
    await bank.archive_account("gone0")  # before the migration
    before = {i: [e async for e in bank.store.read_stream("account", f"gone{i}")] for i in range(3)}
    migrator = Migrator(db, [Migration("note-1", "account.activated", "1.0", "2.0", noted)])
    run = await migrator.run("events_v2")
    assert run.complete and run.copied == await db["events"].count_documents({})
    report = await migrator.verify("events_v2")
    assert report.ok, report.problems
    await bank.archive_account("gone1")  # after the copy, before the switch
    switched = await migrator.switch("events_v2")
    assert switched.ok, switched.problems
    assert await active_events_collection(db) == "events_v2"
    for i in (0, 1):
        assert await db["events_v2"].count_documents({"aggregateId": f"gone{i}"}) == 0
    assert await db["events_v2"].count_documents({"aggregateId": "gone2"}) == 7

    moved = await Bank(db).init()
    assert moved.store.collection_name == "events_v2"
    for i in (0, 1):
        assert [e async for e in moved.store.read_stream("account", f"gone{i}")] == before[i]
    events = [e async for e in moved.store.read_all()]
    assert [e.sequence for e in events] == list(range(1, await moved.store.head_sequence() + 1))
    assert (await moved.archive_account("gone2")).events == 7  # archiving goes on
    assert await db["events_v2"].count_documents({"aggregateId": "gone2"}) == 0


async def test_a_backup_after_a_migration_dropped_archived_copies_restores_a_verified_chain(
    bank: Bank, db: Db, tmp_path: Any
) -> None:
    """A stream archived between a migration's copy and its switch is dropped from the copy;
    the copy's next events link to the dropped events' hashes, kept in esmongo_chain_links.
    A backup must carry those links, or the restore's chain check fails."""
    import uuid

    from esmongo.ops.backup import backup, restore
    from esmongo.ops.check.chain import verify_chain
    from esmongo.ops.migration import Migration, Migrator

    await closed_account(bank, "gone", movements=3)
    await open_account(bank, "open")
    migrator = Migrator(db, [Migration("note-1", "account.activated", "1.0", "2.0", noted)])
    assert (await migrator.run("events_v2")).complete
    await bank.archive_account("gone")  # after the copy, before the switch
    assert (await migrator.switch("events_v2")).ok
    moved = await Bank(db).init()
    await open_account(moved, "after")
    assert (await verify_chain(db)).ok
    await backup(db, tmp_path)
    other = db.client.get_database(
        f"t_restore_{uuid.uuid4().hex[:8]}", codec_options=db.codec_options
    )
    try:
        await restore(other, tmp_path, erasures=[])
        report = await verify_chain(other)
        assert report.ok, report
    finally:
        await db.client.drop_database(other.name)


async def test_backup_and_restore_keep_the_archive(bank: Bank, db: Db, tmp_path: Any) -> None:
    import uuid

    from esmongo.ops.backup import backup, restore

    for i in range(3):
        await closed_account(bank, f"gone{i}", movements=3)
        await open_account(bank, f"open{i}")
    await bank.archive_account("gone0")
    await bank.archive_account("gone2")
    head = await bank.store.head_sequence()
    made = await backup(db, tmp_path)
    assert made.head_sequence == head
    assert made.counts["events"] + made.counts["events_archive"] == head
    assert made.counts["archived_streams"] == 2

    other = db.client.get_database(
        f"t_restore_{uuid.uuid4().hex[:8]}", codec_options=db.codec_options
    )
    try:
        restored = await restore(other, tmp_path, erasures=[])
        assert restored.head_sequence == head
        assert restored.events_checksum == made.events_checksum
        copy = await Bank(other).init()
        assert [e async for e in copy.store.read_all()] == [e async for e in bank.store.read_all()]
        assert await copy.store.archived("account", "gone0") is not None
        for name in ("gone0", "gone2"):
            got = [e async for e in copy.store.read_stream("account", name)]
            assert got == [e async for e in bank.store.read_stream("account", name)]
            with pytest.raises(StreamArchived):
                await copy.store.append("account", name, [NewEvent("account.activated", {})], ANY)
        result = await copy.handle(CreditAccount("open1", Decimal("1.00"), "after-restore"))
        assert result.success and result.events[0].sequence == head + 1
        assert (await copy.archive_account("gone1")).number == 3  # archives numbered on
    finally:
        await db.client.drop_database(other.name)
