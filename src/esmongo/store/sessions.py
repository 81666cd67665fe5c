"""Killing another process's server sessions, to end the transactions it left open.

A process that dies inside a transaction leaves it open on the server until the server's
transaction lifetime ends (`transactionLifetimeLimitSeconds`, 60 s by default on MongoDB),
and the documents it wrote stay locked until then: every other transaction that writes
them meets a write conflict. Whoever knows the dead process's session ids can end that
wait with `killSessions`. Projection leases (esmongo.projections.leases) and event
writers (esmongo.store.writers) both do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pymongo.asynchronous.mongo_client import AsyncMongoClient
from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)


async def kill_sessions(
    client: AsyncMongoClient[Any], session_ids: Sequence[Mapping[str, Any]], whose: str
) -> bool:
    """Kill these sessions (their open transactions abort); False when the server refused.

    Killing a session that has ended, or that the server never saw, does nothing. Needs
    the killAnySession privilege for another user's sessions (MongoDB with authentication);
    without it the caller waits for the transaction lifetime, as it would have anyway.
    """
    if not session_ids:
        return True
    try:
        await client.admin.command("killSessions", list(session_ids))
    except PyMongoError as exc:
        log.warning("could not kill the sessions of %s: %s", whose, exc)
        return False
    return True
