"""One embedded server per test session, on a free port in a temp dir; a fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from command_counter import FindCounter
from esmongo import EventStore
from esmongo.codec import CODEC_OPTIONS, Document
from esmongo.connect.embedded import EmbeddedServer


@pytest.fixture(scope="session")
def server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """MONGODB_URI when set (a real replica set), else a private embedded server."""
    if os.environ.get("ESMONGO_TEST_URI"):
        yield os.environ["ESMONGO_TEST_URI"]
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("server"))
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
async def client(server_uri: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(server_uri)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def db(client: AsyncMongoClient[Document]) -> AsyncIterator[AsyncDatabase[Document]]:
    """A database of its own for each test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    database = client.get_database(name, codec_options=CODEC_OPTIONS)
    try:
        yield database
    finally:
        await client.drop_database(name)


@pytest.fixture
async def store(db: AsyncDatabase[Document]) -> EventStore:
    """An initialised EventStore on the test's database, default options."""
    store = EventStore(db)
    await store.init()
    return store


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "esmongo-home"


@pytest.fixture
async def counted(
    server_uri: str, db: AsyncDatabase[Document]
) -> AsyncIterator[tuple[FindCounter, AsyncDatabase[Document]]]:
    listener = FindCounter()
    client: AsyncMongoClient[Document] = AsyncMongoClient(server_uri, event_listeners=[listener])
    try:
        yield listener, client.get_database(db.name, codec_options=CODEC_OPTIONS)
    finally:
        await client.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Each phase's report on the item (`item.stash[PHASE_REPORTS]`), for fixtures that act
    on failure (the console's browser tests save screenshots)."""
    report = yield
    item.stash.setdefault(PHASE_REPORTS, {})[report.when] = report
    return report


PHASE_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
