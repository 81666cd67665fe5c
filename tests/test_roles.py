"""Issue 15 item 1: append-only enforced by MongoDB roles (`esmongo init --roles`).

The embedded server runs here with `--auth`; each test connects as each role's user over a
real connection and shows what MongoDB refuses and what still works. The log is in a
database of its own (esmongo.store.layout): the embedded server matches a custom role's
privileges by database only (docs/mongodb.md), and so does every grant of these roles.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from api_helpers import api_client
from cli_helpers import esmongo
from es_apps import Orders
from esmongo import EventStore, NewEvent
from esmongo.bank import Bank
from esmongo.bank.commands import ActivateAccount, CloseAccount, CreateAccount, CreditAccount
from esmongo.bank.read_models import ACCOUNTS_READ
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.connect.embedded import EmbeddedServer
from esmongo.console.figures import figures
from esmongo.ops.backup import backup, restore
from esmongo.ops.migration import Migrator
from esmongo.ops.roles import ensure_roles, privileges, role_names
from esmongo.projections.daemon import ProjectionDaemon
from esmongo.projections.rebuild import rebuild
from esmongo.store.layout import log_database, use_log_database

UNAUTHORIZED = 13
ROOT, ROOT_PASSWORD = "root", "root-secret"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An embedded server with --auth (and a root user made before, on a run without it)."""
    home: Path = tmp_path_factory.mktemp("auth-server")
    client: MongoClient[Document]
    with EmbeddedServer(home) as open_server, MongoClient(open_server.uri) as client:
        client.admin.command(
            "createUser", ROOT, pwd=ROOT_PASSWORD, roles=[{"role": "root", "db": "admin"}]
        )
    server = EmbeddedServer(home, auth=True)
    info = server.start()
    try:
        yield info.port
    finally:
        server.stop()


def uri(port: int, user: str, password: str) -> str:
    return (
        f"mongodb://{user}:{password}@127.0.0.1:{port}/"
        "?directConnection=true&retryWrites=false&authSource=admin"
    )


@dataclass
class Deployment:
    port: int
    main: str
    log: str
    users: dict[str, str]
    """Role kind (writer, reader, operator) -> user name (password: the same)."""
    clients: list[AsyncMongoClient[Document]]

    def db(self, kind: str) -> AsyncDatabase[Document]:
        """The main database, as the user of role `kind` (or "root")."""
        user = ROOT if kind == "root" else self.users[kind]
        password = ROOT_PASSWORD if kind == "root" else user
        client: AsyncMongoClient[Document] = AsyncMongoClient(uri(self.port, user, password))
        self.clients.append(client)
        return client.get_database(self.main, codec_options=CODEC_OPTIONS)


@pytest.fixture
async def deployment(auth_server: int) -> AsyncIterator[Deployment]:
    async with deployed(auth_server) as found:
        yield found


@contextlib.asynccontextmanager
async def deployed(port: int) -> AsyncIterator[Deployment]:
    """A split deployment initialized by root: `init --log-db`, `init --roles`, a user per
    role."""
    main = f"r_{uuid.uuid4().hex[:10]}"
    found = Deployment(port, main, f"{main}_log", {}, [])
    root = found.db("root")
    await use_log_database(root, found.log)
    await Bank(root).init()
    await ensure_roles(root)
    admin = root.client.admin
    for kind, role in role_names(main).items():
        user = f"{main}_{kind}_user"
        await admin.command("createUser", user, pwd=user, roles=[{"role": role, "db": "admin"}])
        found.users[kind] = user
    try:
        yield found
    finally:
        for user in found.users.values():
            await admin.command("dropUser", user)
        for role in role_names(main).values():
            await admin.command("dropRole", role)
        await root.client.drop_database(found.log)
        await root.client.drop_database(main)
        for client in found.clients:
            await client.close()


async def balance_projected(bank: Bank, account_id: str) -> Decimal:
    """The account's balance in accounts_read once the projections reached the head."""
    daemon = ProjectionDaemon(bank.store, bank.projections)
    daemon.start()
    try:
        await daemon.wait_until(await bank.store.head_sequence(), timeout_s=30)
    finally:
        await daemon.stop()
    account = await bank.db[ACCOUNTS_READ].find_one({"accountId": account_id})
    assert account is not None, f"{account_id} is not in {ACCOUNTS_READ}"
    return Decimal(account["balance"])


def refused(exc: pytest.ExceptionInfo[OperationFailure]) -> None:
    assert exc.value.code == UNAUTHORIZED, exc.value


async def test_a_writer_appends_but_cannot_rewrite_drop_or_rename_the_log(
    deployment: Deployment,
) -> None:
    writer = deployment.db("writer")
    store = await EventStore.open(writer)
    await store.init()  # the indexes exist: no createIndex on the log is needed
    recorded = await store.append("t", "a", [NewEvent("Happened", {"n": i}) for i in range(3)])
    assert [e.sequence for e in recorded] == [1, 2, 3]

    log = await log_database(writer)
    assert log.name == deployment.log
    events = log[store.events.name]
    with pytest.raises(OperationFailure) as update:
        await events.update_one({"sequence": 2}, {"$set": {"data.n": 99}})
    refused(update)
    with pytest.raises(OperationFailure) as delete:
        await events.delete_many({})
    refused(delete)
    with pytest.raises(OperationFailure) as drop:
        await log.drop_collection(store.events.name)
    refused(drop)
    with pytest.raises(OperationFailure) as rename:
        await events.rename("events_rewritten")
    refused(rename)
    with pytest.raises(OperationFailure) as archive:  # the archive is as closed as the log
        await log["events_archive"].delete_many({})
    refused(archive)

    root_events = (await log_database(deployment.db("root")))[store.events.name]
    stored = [doc["data"]["n"] async for doc in root_events.find({}, sort=[("sequence", 1)])]
    assert stored == [0, 1, 2]
    assert [e.data["n"] async for e in store.read_stream("t", "a")] == [0, 1, 2]


async def test_the_bank_api_idempotency_and_projections_run_as_the_writer(
    deployment: Deployment,
) -> None:
    writer = deployment.db("writer")
    async with api_client(writer) as api:
        await api.open_account("acc-1", funds="100.00")
        body = {"amount": "30.00"}
        headers = {"Idempotency-Key": "debit-1"}
        first = await api.post("/accounts/acc-1/debit", json=body, headers=headers)
        again = await api.post("/accounts/acc-1/debit", json=body, headers=headers)
        assert first.status_code == again.status_code == 200, first.text
        assert again.json() == first.json()  # the stored response, in the main database
        assert again.headers["Idempotent-Replayed"] == "true"
        reused = await api.post("/accounts/acc-1/debit", json={"amount": "1.00"}, headers=headers)
        assert reused.status_code == 422, reused.text  # the key, with another request

    bank = await Bank(writer).init()
    history = [e.event_type async for e in bank.store.read_stream("account", "acc-1")]
    assert history.count("account.debited") == 1  # the retry was answered from its record
    assert await balance_projected(bank, "acc-1") == Decimal("70.00")


async def test_a_reader_reads_and_writes_nothing(deployment: Deployment) -> None:
    writer_store = await EventStore.open(deployment.db("writer"))
    await writer_store.append("t", "a", [NewEvent("Happened", {"n": 1})])
    reader = deployment.db("reader")
    store = await EventStore.open(reader)
    assert [e.data async for e in store.read_all()] == [{"n": 1}]
    with pytest.raises(OperationFailure) as append:
        await store.append("t", "b", [NewEvent("Happened", {"n": 2})])
    refused(append)
    with pytest.raises(OperationFailure) as insert:
        await store.events.insert_one({"sequence": 9})
    refused(insert)
    with pytest.raises(OperationFailure) as update:
        await reader["counters"].update_one({}, {"$inc": {"value": 1}})
    refused(update)
    assert await writer_store.head_sequence() == 1


async def test_the_operator_archives_and_migrates(deployment: Deployment) -> None:
    bank = await Bank(deployment.db("writer")).init()
    await bank.handle(CreateAccount("acc-1", "u1", "Ann", "EUR"))
    await bank.handle(ActivateAccount("acc-1"))
    await bank.handle(CloseAccount("acc-1"))
    with pytest.raises(OperationFailure) as as_writer:
        await bank.archive_account("acc-1")
    refused(as_writer)

    operator = deployment.db("operator")
    as_operator = await Bank(operator).init()
    report = await as_operator.archive_account("acc-1")
    assert report.events == 3
    archive = (await log_database(operator))["events_archive"]
    assert await archive.count_documents({"aggregateId": "acc-1"}) == 3

    migrator = Migrator(operator, [])
    run = await migrator.run("events_v2")
    assert run.failure_count == 0
    switched = await migrator.switch("events_v2")
    assert switched.ok, switched
    log = await log_database(operator)
    assert "events_v2" in await log.list_collection_names()
    assert "events_v2" not in await operator.list_collection_names()
    reopened = await Bank(deployment.db("writer")).init()  # the writer follows the switch
    assert reopened.store.events.name == "events_v2"
    await reopened.handle(CreateAccount("acc-2", "u2", "Bob", "EUR"))
    assert await reopened.store.head_sequence() == 4


async def test_the_operator_backs_up_restores_and_rebuilds_a_read_model(
    deployment: Deployment, tmp_path: Path
) -> None:
    writer = await Bank(deployment.db("writer")).init()
    await writer.handle(CreateAccount("acc-1", "u1", "Ann", "EUR"))
    await writer.handle(ActivateAccount("acc-1"))
    await writer.handle(CreditAccount("acc-1", Decimal("25.00")))
    made = await backup(deployment.db("operator"), tmp_path / "backup")
    assert made.head_sequence == 3

    async with deployed(deployment.port) as fresh:
        operator = fresh.db("operator")
        restored = await restore(operator, tmp_path / "backup", erasures=[])
        assert restored.head_sequence == 3
        bank = await Bank(operator).init()
        assert [e.event_type async for e in bank.store.read_stream("account", "acc-1")] == [
            "account.created",
            "account.activated",
            "account.credited",
        ]
        accounts = next(p for p in bank.projections if p.name == ACCOUNTS_READ)
        result = await rebuild(bank.store, accounts)
        assert result.position == 3
        account = await operator[ACCOUNTS_READ].find_one({"accountId": "acc-1"})
        assert account is not None and account["balance"] == Decimal("25.00")
        after = await Bank(fresh.db("writer")).init()  # the writer goes on after the restore
        credited = await after.handle(CreditAccount("acc-1", Decimal("5.00")))
        assert credited.success, credited.error
        assert await after.store.head_sequence() == 4


async def test_a_rebuild_asked_of_a_service_running_as_the_writer_reports_its_refusal(
    deployment: Deployment,
) -> None:
    writer = deployment.db("writer")
    async with api_client(writer) as api:
        await api.open_account("acc-1", funds="100.00")
        admin = {"Authorization": f"Bearer {api.keys['admin']}"}
        started = await api.http.post("/projections/accounts_read/rebuild", headers=admin)
        assert started.status_code == 202, started.text
        task = api.app.state.services.rebuilds["accounts_read"]
        with pytest.raises(OperationFailure):
            await asyncio.wait_for(task, 60)
        listed = await api.http.get("/projections", headers=admin)
        status = next(p for p in listed.json() if p["name"] == "accounts_read")
        assert status["rebuilding"] is False
        assert status["rebuildFailed"].startswith("OperationFailure: not authorized"), status
        shown = await figures(api.app.state.services)  # what the console's page shows
        failed = next(p for p in shown.projections if p["name"] == "accounts_read")
        assert failed["rebuildFailed"] == status["rebuildFailed"]
    bank = await Bank(writer).init()  # the read model it was to replace still serves
    assert await balance_projected(bank, "acc-1") == Decimal("100.00")


async def test_eventsourcing_applications_append_as_the_writer_into_a_log_it_cannot_rewrite(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSISTENCE_MODULE", "esmongo.eventsourcing")
    monkeypatch.setenv("MONGODB_DATABASE", deployment.main)
    operator = deployment.users["operator"]
    monkeypatch.setenv("MONGODB_URI", uri(deployment.port, operator, operator))
    await asyncio.to_thread(lambda: Orders().close())  # the operator creates the indexes
    writer = deployment.users["writer"]
    monkeypatch.setenv("MONGODB_URI", uri(deployment.port, writer, writer))

    def place() -> UUID:
        orders = Orders()
        try:
            return orders.place("by the writer")
        finally:
            orders.close()

    placed = await asyncio.to_thread(place)
    log = await log_database(deployment.db("writer"))
    assert await log["orders_events"].count_documents({"aggregateId": str(placed)}) == 1
    with pytest.raises(OperationFailure) as update:
        await log["orders_events"].update_one({}, {"$set": {"data": b""}})
    refused(update)
    with pytest.raises(OperationFailure) as delete:
        await log["orders_events"].delete_many({})
    refused(delete)


async def test_init_roles_is_idempotent_and_needs_a_log_database(
    deployment: Deployment, auth_server: int
) -> None:
    root = deployment.db("root")
    again = await ensure_roles(root)
    assert [r.created for r in again] == [False, False, False]
    info = await root.client.admin.command(
        "rolesInfo", {"role": f"{deployment.main}_writer", "db": "admin"}, showPrivileges=True
    )
    granted = {p["resource"]["db"]: set(p["actions"]) for p in info["roles"][0]["privileges"]}
    assert granted[deployment.log] == {
        "find",
        "insert",
        "listCollections",
        "listIndexes",
        "changeStream",
        "killCursors",
    }
    assert (
        not {"update", "remove", "dropCollection", "renameCollectionSameDB"}
        & granted[deployment.log]
    )
    one_database = root.client.get_database(f"{deployment.main}_one")
    with pytest.raises(Exception, match="a database of its own"):
        await ensure_roles(one_database)
    assert privileges("m", "m_log")["m_writer"][0]["resource"] == {"db": "m_log", "collection": ""}


def test_esmongo_init_roles_on_the_command_line(auth_server: int) -> None:
    main = f"r_{uuid.uuid4().hex[:10]}"
    root = uri(auth_server, ROOT, ROOT_PASSWORD)
    try:
        refused_cli = esmongo(root, main, "init", "--roles")
        assert refused_cli.returncode == 2, refused_cli
        assert "a database of its own" in refused_cli.stderr
        first = esmongo(root, main, "init", "--log-db", f"{main}_log", "--roles")
        assert first.returncode == 0, first.stderr
        assert f"the log (events, archive) is in the log database {main}_log" in first.stdout
        assert f"role {main}_writer (admin) created" in first.stdout
        again = esmongo(root, main, "init", "--roles")  # the layout is recorded: idempotent
        assert again.returncode == 0, again.stderr
        assert f"role {main}_operator (admin) updated" in again.stdout
        moved = esmongo(root, main, "init", "--log-db", "elsewhere")
        assert moved.returncode == 2 and "cannot move" in moved.stderr, moved
        with MongoClient(root) as client:
            client.admin.command(
                "createUser",
                f"{main}_w",
                pwd="pw",
                roles=[{"role": f"{main}_writer", "db": "admin"}],
            )
        writer = uri(auth_server, f"{main}_w", "pw")
        for command in (["verify"], ["check"], ["events", "list"]):  # as the writer
            done = esmongo(writer, main, *command)
            assert done.returncode == 0, (command, done.stderr)
    finally:
        with MongoClient(root) as client:
            for role in role_names(main).values():
                if client.admin.command("rolesInfo", {"role": role, "db": "admin"})["roles"]:
                    client.admin.command("dropRole", role)
            if client.admin.command("usersInfo", f"{main}_w")["users"]:
                client.admin.command("dropUser", f"{main}_w")
            client.drop_database(main)
            client.drop_database(f"{main}_log")
