"""The store conformance suite (esmongo.testing) against this project's configurations."""

from __future__ import annotations

import subprocess
import sys

from pymongo.asynchronous.database import AsyncDatabase

from esmongo.codec import Document
from esmongo.store import EventStore
from esmongo.testing import EventStoreConformance


class TestDefaultStore(EventStoreConformance):
    def make_store(self, db: AsyncDatabase[Document]) -> EventStore:
        return EventStore(db)


class TestWithoutGroupCommit(EventStoreConformance):
    def make_store(self, db: AsyncDatabase[Document]) -> EventStore:
        return EventStore(db, group_commit=False)


class TestCustomCollection(EventStoreConformance):
    """A store that names its own collection, on a database nobody wrote to before."""

    def make_store(self, db: AsyncDatabase[Document]) -> EventStore:
        return EventStore(db, collection="ledger_events")


class TestSmallBatches(EventStoreConformance):
    """Group commit cut into batches of two events at most: appends split across batches."""

    def make_store(self, db: AsyncDatabase[Document]) -> EventStore:
        return EventStore(db, max_batch_events=2)


def test_the_suite_says_what_it_needs_without_pytest() -> None:
    blocked = "import sys; sys.modules['pytest'] = None; import esmongo.testing"
    run = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert run.returncode != 0
    assert "esmongo.testing is the store conformance suite for pytest" in run.stderr
    assert "pip install pytest pytest-asyncio" in run.stderr
