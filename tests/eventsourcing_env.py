"""The environment the `eventsourcing` library's test cases run in: esmongo.eventsourcing
on the session's embedded server, a database of its own for each test, dropped after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymongo import MongoClient

from esmongo.codec import Document

MODULE = "esmongo.eventsourcing"


@pytest.fixture(autouse=True)
def mongo_env(server_uri: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """PERSISTENCE_MODULE, MONGODB_URI and MONGODB_DATABASE in os.environ (where the
    library's applications read them) and returned, for factories made by hand."""
    database = f"es_{uuid.uuid4().hex[:12]}"
    env = {"PERSISTENCE_MODULE": MODULE, "MONGODB_URI": server_uri, "MONGODB_DATABASE": database}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    client: MongoClient[Document] = MongoClient(server_uri)
    try:
        client.drop_database(database)
    finally:
        client.close()
