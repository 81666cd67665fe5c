"""The embedded server's life cycle, durability across restarts, and the connection checks.

These tests start private servers in temp dirs (never the session one), so they may stop
and kill them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from esmongo import Connection, EventStore, NewEvent, RecordedEvent, SnapshotStore
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.connect import Settings
from esmongo.connect.connection import check_replica_set, redact
from esmongo.connect.embedded import (
    EmbeddedServer,
    answers_hello,
    find_server_command,
    free_port,
    pid_alive,
    server_uri,
)
from esmongo.errors import ConfigurationError, EmbeddedServerError


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def server(home: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(home)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_start_in_a_temp_home(server: EmbeddedServer, home: Path) -> None:
    assert server.owned
    assert server.info is not None
    assert answers_hello(server.info.port)
    assert server.uri == server_uri(server.info.port)
    assert "retryWrites=false" in server.uri
    assert json.loads((home / "server.json").read_text()) == {
        "pid": server.info.pid,
        "port": server.info.port,
    }
    assert (home / "data").is_dir()
    assert (home / "server.log").exists()


def test_a_second_server_on_the_same_home_reuses_the_first(
    server: EmbeddedServer, home: Path
) -> None:
    reuser = EmbeddedServer(home)
    info = reuser.start()
    assert info == server.info
    assert not reuser.owned
    assert reuser.uri == server.uri
    reuser.stop()
    assert server.info is not None
    assert answers_hello(server.info.port)  # still running
    assert pid_alive(server.info.pid)
    assert (home / "server.json").exists()
    with pytest.raises(EmbeddedServerError):
        _ = reuser.uri
    # The owner stops it for real, and removes the port file.
    pid, port = server.info.pid, server.info.port
    server.stop()
    assert not pid_alive(pid)
    assert not answers_hello(port, timeout_s=0.5)
    assert not (home / "server.json").exists()
    with pytest.raises(EmbeddedServerError, match="not running"):
        _ = server.uri


@pytest.mark.parametrize("content", ["stale", "garbage"])
def test_a_stale_port_file_is_cleaned_and_a_new_server_started(home: Path, content: str) -> None:
    home.mkdir(parents=True)
    port_file = home / "server.json"
    stale_port = free_port()
    if content == "stale":
        port_file.write_text(json.dumps({"pid": dead_pid(), "port": stale_port}))
    else:
        port_file.write_text("{not json")
    with EmbeddedServer(home) as server:
        assert server.owned
        assert server.info is not None
        assert answers_hello(server.info.port)
        recorded = json.loads(port_file.read_text())
        assert recorded == {"pid": server.info.pid, "port": server.info.port}
    assert not port_file.exists()


def test_a_live_process_that_does_not_answer_is_not_replaced(home: Path) -> None:
    home.mkdir(parents=True)
    port_file = home / "server.json"
    # This very process is alive, and nothing listens on that port.
    port_file.write_text(json.dumps({"pid": os.getpid(), "port": free_port()}))
    server = EmbeddedServer(home)
    with pytest.raises(EmbeddedServerError, match="does not answer"):
        server.start()
    assert not server.owned
    assert port_file.exists()


async def write_events(uri: str) -> list[RecordedEvent]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    try:
        db = client.get_database("durable", codec_options=CODEC_OPTIONS)
        store = EventStore(db)
        await store.init()
        snapshots = SnapshotStore(db)
        await snapshots.init()
        recorded: list[RecordedEvent] = []
        for i in range(30):
            event = NewEvent("money.moved", {"i": i, "amount": Decimal(f"{i}.05")})
            recorded += await store.append("t", f"s{i % 4}", [event])
        await snapshots.save("t", "s0", 8, {"balance": Decimal("1.50")}, 1)
        return recorded
    finally:
        await client.close()


async def read_back(uri: str) -> tuple[list[RecordedEvent], int, object]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    try:
        db = client.get_database("durable", codec_options=CODEC_OPTIONS)
        store = EventStore(db)
        events = [e async for e in store.read_all()]
        snapshot = await SnapshotStore(db).get("t", "s0")
        return events, await store.head_sequence(), snapshot and snapshot.state
    finally:
        await client.close()


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_everything_acknowledged_survives_a_restart(home: Path, how: str) -> None:
    first = EmbeddedServer(home)
    first.start()
    try:
        written = await write_events(first.uri)
        assert first.info is not None
        if how == "kill":  # a crash: no chance to flush anything
            os.kill(first.info.pid, signal.SIGKILL)
    finally:
        first.stop()
    with EmbeddedServer(home) as second:
        assert second.owned
        events, head, state = await read_back(second.uri)
    assert events == written
    assert head == 30
    assert state == {"balance": Decimal("1.50")}


@pytest.fixture
def standalone_port(tmp_path: Path) -> Iterator[int]:
    """A SecantusDB that says it is a standalone server, not a replica set member."""
    port = free_port()
    process = subprocess.Popen(
        [
            find_server_command(),
            "--standalone",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--storage-path",
            str(tmp_path / "standalone"),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not answers_hello(port, timeout_s=0.5):
            assert process.poll() is None, "the standalone server exited"
            assert time.monotonic() < deadline, "the standalone server did not answer"
            time.sleep(0.1)  # polling another process: there is nothing to await
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_a_standalone_server_is_refused_with_a_clear_message(standalone_port: int) -> None:
    uri = server_uri(standalone_port)
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri)
    try:
        with pytest.raises(ConfigurationError, match="not a replica set member") as caught:
            await check_replica_set(client, "the test server")
        assert "the test server" in str(caught.value)
        assert "--replSet" in str(caught.value)
    finally:
        await client.close()
    connection = Connection(Settings(mongodb_uri=uri))
    with pytest.raises(ConfigurationError, match="replica set"):
        await connection.open()
    with pytest.raises(ConfigurationError, match="not open"):
        _ = connection.client


async def test_an_unreachable_server_is_a_configuration_error() -> None:
    port = free_port()
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        server_uri(port), serverSelectionTimeoutMS=300
    )
    try:
        with pytest.raises(ConfigurationError, match=f"nothing listening at 127.0.0.1:{port}"):
            await check_replica_set(client, "nowhere")
    finally:
        await client.close()


async def test_connection_to_a_replica_set(server_uri: str) -> None:
    async with Connection(Settings(mongodb_uri=server_uri, database="conn_test")) as conn:
        assert conn.server is None  # a given URI starts nothing
        assert conn.uri == server_uri
        await conn.db["t"].insert_one({"_id": 1, "amount": Decimal("2.50")})
        doc = await conn.db["t"].find_one({"_id": 1})
        assert doc is not None
        assert doc["amount"] == Decimal("2.50")
        await conn.client.drop_database("conn_test")
    with pytest.raises(ConfigurationError):
        _ = conn.client


async def test_connection_starts_and_stops_the_embedded_server(home: Path) -> None:
    async with Connection(Settings(home=home, database="emb")) as conn:
        assert conn.server is not None
        assert conn.server.owned
        info = conn.server.info
        assert info is not None
        assert conn.uri == info.uri
        assert (await conn.db.command("ping"))["ok"] == 1
    assert conn.server is None
    assert not pid_alive(info.pid)
    assert not (home / "server.json").exists()


def test_settings_from_env() -> None:
    defaults = Settings.from_env({})
    assert defaults == Settings(mongodb_uri=None, database="esmongo", home=Path(".esmongo"))
    assert Settings.from_env({"MONGODB_URI": "", "ESMONGO_DB": "", "ESMONGO_HOME": ""}) == (
        defaults
    )
    given = Settings.from_env(
        {
            "MONGODB_URI": "mongodb://h1,h2/?replicaSet=rs0",
            "ESMONGO_DB": "bank",
            "ESMONGO_HOME": "/var/lib/esmongo",
        }
    )
    assert given.mongodb_uri == "mongodb://h1,h2/?replicaSet=rs0"
    assert given.database == "bank"
    assert given.home == Path("/var/lib/esmongo")


def test_settings_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESMONGO_DB", "from_env")
    monkeypatch.delenv("MONGODB_URI", raising=False)
    assert Settings.from_env().database == "from_env"
    assert Settings.from_env().mongodb_uri is None


def test_redact_hides_the_password() -> None:
    assert (
        redact("mongodb://ann:s3cret@db.example:27017/x") == "mongodb://ann:***@db.example:27017/x"
    )
    assert redact("mongodb://db.example/x") == "mongodb://db.example/x"


def test_find_server_command_and_probes() -> None:
    command = Path(find_server_command())
    assert command.name == "secantusd-py"
    assert os.access(command, os.X_OK)
    assert not pid_alive(dead_pid())
    assert pid_alive(os.getpid())
    assert not answers_hello(free_port(), timeout_s=0.3)


def test_server_dies_with_its_owner(tmp_path: Path) -> None:
    """An owner killed outright (kill -9, a CI timeout) leaves no server running."""
    script = (
        "import sys, time\n"
        "from esmongo.connect.embedded import EmbeddedServer\n"
        "info = EmbeddedServer(sys.argv[1]).start()\n"
        "print(info.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "home")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        assert pid_alive(server_pid)
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 30
    while pid_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(server_pid)
