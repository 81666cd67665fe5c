"""An append condition: a check run in the append's own transaction, that may refuse it.

Every append transaction of a log writes its counter document first, so once a transaction
has taken its block of sequence numbers no other append of that log commits until it ends:
a read made then sees every event recorded before this batch, and the check and the insert
are one atomic step (what a "dynamic consistency boundary" needs: refuse the append if an
event matching a query was recorded after a position). The check runs after the batch's
events are inserted, so it also sees the events of appends earlier in the same batch; it
must look only below `before`, the append's own first sequence number. When the event that
refuses an append is one of an earlier append of the same batch, the store does not refuse
it yet: that earlier append may still be taken out, so the condition is checked again in
the next transaction, against committed events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from esmongo.codec import Document


class AppendCondition(Protocol):
    async def refusal(
        self,
        events: AsyncCollection[Document],
        before: int,
        session: AsyncClientSession,
    ) -> int | None:
        """The lowest sequence number below `before` of an event that refuses the append
        (read in `session`, the append's transaction), or None when it may go ahead."""
        ...


class ConditionRefused(Exception):
    """Raised inside a batch's transaction: the condition of its `index`-th append refuses
    it because of event `sequence`; `in_batch` when that event is of an earlier append of
    the batch (the store checks it again next round instead of refusing it)."""

    def __init__(self, index: int, sequence: int, in_batch: bool) -> None:
        super().__init__(f"an append's condition refuses it: event {sequence}")
        self.index = index
        self.sequence = sequence
        self.in_batch = in_batch


async def check_conditions(
    conditions: Sequence[tuple[AppendCondition | None, int]],
    batch_first: int,
    events: AsyncCollection[Document],
    session: AsyncClientSession,
) -> None:
    """Each append's condition (with its first sequence number), in the batch's
    transaction, after its insert: ConditionRefused for the first that refuses."""
    for index, (condition, before) in enumerate(conditions):
        if condition is None:
            continue
        refused = await condition.refusal(events, before, session)
        if refused is not None:
            raise ConditionRefused(index, refused, in_batch=refused >= batch_first)
