"""The merged read leaves out the archive read of a range the active collection holds
whole (esmongo.store.archive.merged): a live wake-up costs one read, not two. Archived
streams interleaved with active ones, and an archive moving events in the middle of a
read, must still give every event once, in order."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from esmongo import RecordedEvent
from esmongo.bank import (
    ActivateAccount,
    Bank,
    CloseAccount,
    CreateAccount,
    CreditAccount,
    DebitAccount,
)
from esmongo.store import archive as archive_module

Db = AsyncDatabase[dict[str, Any]]


@pytest.fixture
async def bank(db: Db) -> Bank:
    return await Bank(db, snapshot_every=3).init()


@pytest.fixture
def reads() -> Iterator[dict[str, int]]:
    counts = archive_module.ARCHIVE_READS
    saved = dict(counts)
    counts.update(read=0, skipped=0)
    yield counts
    counts.update(saved)


async def interleaved(bank: Bank, gone: str, kept: str, movements: int) -> None:
    """Two accounts written turn by turn; `gone` ends empty and closed."""
    for account in (gone, kept):
        assert (await bank.handle(CreateAccount(account, "u", "User", "EUR"))).success
        assert (await bank.handle(ActivateAccount(account))).success
    for n in range(movements):
        for account in (gone, kept):
            credit = CreditAccount(account, Decimal("1.00"), f"{account}-{n}")
            assert (await bank.handle(credit)).success
    assert (await bank.handle(DebitAccount(gone, Decimal(movements), "empty"))).success
    assert (await bank.handle(CloseAccount(gone, "done"))).success


async def read(bank: Bank, after: int = 0, limit: int = 0, **kwargs: Any) -> list[RecordedEvent]:
    return [e async for e in bank.store.read_all(after, limit, **kwargs)]


async def test_ranges_the_active_collection_holds_whole_skip_the_archive(
    bank: Bank, reads: dict[str, int]
) -> None:
    await interleaved(bank, "gone", "kept", movements=4)
    await interleaved(bank, "gone2", "kept2", movements=3)
    archived_part = await bank.store.head_sequence()
    for n in range(5):
        assert (await bank.handle(CreditAccount("kept", Decimal("2.00"), f"tail{n}"))).success
    head = await bank.store.head_sequence()
    full = await read(bank)
    assert [e.sequence for e in full] == list(range(1, head + 1))
    await bank.archive_account("gone")
    await bank.archive_account("gone2")

    # Wherever archived events lie, pages read both and give every event once.
    reads.update(read=0, skipped=0)
    assert await read(bank) == full
    for size in (1, 2, 3, 5, 8):
        paged: list[RecordedEvent] = []
        while page := await read(bank, paged[-1].sequence if paged else 0, size, batch_size=size):
            paged += page
        assert paged == full, size
    credited = [e for e in full if e.event_type == "account.credited"]
    assert await read(bank, 3, event_types=["account.credited"], through=head) == [
        e for e in credited if e.sequence > 3
    ]
    assert reads["read"] > 0 and reads["skipped"] > 0

    # The tail after the archived part is all active: no archive read at all.
    reads.update(read=0, skipped=0)
    assert await read(bank, archived_part, through=head) == full[archived_part:]
    assert await read(bank, archived_part, 2) == full[archived_part : archived_part + 2]
    only_credits = await read(bank, archived_part, event_types=["account.credited"], through=head)
    assert only_credits == full[archived_part:]  # every tail event is a credit
    assert reads == {"read": 0, "skipped": 3}

    # A filtered range with gaps (other types) still reads the archive.
    assert await read(bank, 0, event_types=["account.created"], through=head) == [
        e for e in full if e.event_type == "account.created"
    ]
    assert reads["read"] == 1


@pytest.mark.parametrize("credits_only", [False, True])
async def test_an_archive_in_the_middle_of_a_read_loses_and_repeats_nothing(
    bank: Bank, reads: dict[str, int], monkeypatch: pytest.MonkeyPatch, credits_only: bool
) -> None:
    """Unfiltered, the pages are gap-free and skip the archive; filtered, they have gaps and
    read it after the move, finding there events the page already holds. (The embedded
    server's cursor keeps giving documents deleted after it opened, docs/mongodb.md, so
    here the later pages still hold the moved events; MongoDB promises neither way.)"""
    await interleaved(bank, "gone", "kept", movements=6)
    types = ["account.credited"] if credits_only else None
    full = await read(bank, event_types=types)
    pages = 0

    async def archive_after_the_first_page() -> None:
        nonlocal pages
        pages += 1
        if pages == 1:  # the first page holds events of "gone" read before they move
            await bank.archive_account("gone")

    monkeypatch.setitem(archive_module.PAUSE_POINTS, "merged:page", archive_after_the_first_page)
    got = await read(bank, event_types=types, batch_size=4)
    assert got == full
    assert pages > 1
    assert reads["read" if credits_only else "skipped"] >= 1
    archived = [d async for d in bank.store.archive.events.find({}, sort=[("sequence", 1)])]
    assert {d["aggregateId"] for d in archived} == {"gone"}
