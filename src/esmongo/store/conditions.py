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
