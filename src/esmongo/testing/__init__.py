"""A conformance suite for event stores: pytest test cases any configuration or fork runs.

Subclass `EventStoreConformance` in a test module, name the class `Test...`, and say how
to build the store under test::

    from esmongo import EventStore
    from esmongo.testing import EventStoreConformance

    class TestMyStore(EventStoreConformance):
        def make_store(self, db):
            return EventStore(db, collection="my_events", group_commit=False)

The cases need one fixture from your conftest: `db`, a fresh, empty
`pymongo.asynchronous.database.AsyncDatabase` for each test, opened with
`esmongo.codec.CODEC_OPTIONS` (as `Connection.db` is) on a replica set (transactions).
If yours has another name, define `db` on the subclass and return it. The cases are
async and marked for pytest-asyncio, so they run in its strict and auto modes alike.

The suite is a dev/test tool: it needs pytest and pytest-asyncio, which `pip install
esmongo` does not bring.
"""

from __future__ import annotations

try:
    import pytest
    import pytest_asyncio  # noqa: F401
except ImportError as missing:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "esmongo.testing is the store conformance suite for pytest: it needs pytest and "
        f"pytest-asyncio, and {missing.name or 'one of them'} is not installed "
        "(pip install pytest pytest-asyncio)"
    ) from missing

# Before the cases are imported, so that their plain asserts explain a failure.
pytest.register_assert_rewrite(
    "esmongo.testing.base",
    "esmongo.testing.appends",
    "esmongo.testing.concurrency",
    "esmongo.testing.reads",
    "esmongo.testing.unit_of_work",
    "esmongo.testing.archive",
)

from esmongo.testing.appends import AppendCases  # noqa: E402
from esmongo.testing.archive import ArchiveCases  # noqa: E402
from esmongo.testing.base import StoreCase, all_events, assert_gap_free, new_events  # noqa: E402
from esmongo.testing.concurrency import ConcurrencyCases  # noqa: E402
from esmongo.testing.reads import ReadCases  # noqa: E402
from esmongo.testing.unit_of_work import UnitOfWorkCases  # noqa: E402


class EventStoreConformance(
    AppendCases, ConcurrencyCases, ReadCases, UnitOfWorkCases, ArchiveCases
):
    """Every case of the suite. Override `make_store`; subclass the parts instead to run
    some of them (each is a `StoreCase`)."""


__all__ = [
    "AppendCases",
    "ArchiveCases",
    "ConcurrencyCases",
    "EventStoreConformance",
    "ReadCases",
    "StoreCase",
    "UnitOfWorkCases",
    "all_events",
    "assert_gap_free",
    "new_events",
]
