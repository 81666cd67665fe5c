"""A writer process that takes the sequence counter in an append's transaction and stops
there, so that the test can kill it (SIGKILL) while its transaction is open.

Usage: python tests/dying_writer.py URI DATABASE [append|archive]. Prints `holding` once
the counter is taken (by an append, or by the archive of the stream order/closed), then
waits forever.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from pymongo import AsyncMongoClient

import esmongo.store.archive
import esmongo.store.batch_writer
import esmongo.store.transactions
from esmongo import EventStore, NewEvent
from esmongo.codec import CODEC_OPTIONS
from esmongo.store.writers import Liveness

LIVENESS = Liveness(heartbeat_s=0.2, stale_after_s=1.0)


async def main(uri: str, name: str, mode: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    store = EventStore(client.get_database(name, codec_options=CODEC_OPTIONS), liveness=LIVENESS)
    await store.init()
    bump = esmongo.store.transactions.bump_counter

    async def bump_and_hang(*args: Any, **kwargs: Any) -> Any:
        await bump(*args, **kwargs)
        print("holding", flush=True)
        await asyncio.Event().wait()  # killed here, the transaction open

    if mode == "archive":  # the stream was appended by another process: no session used yet
        setattr(esmongo.store.archive, "bump_counter", bump_and_hang)  # noqa: B010
        await store.archive_stream("order", "closed")
        return
    setattr(esmongo.store.batch_writer, "bump_counter", bump_and_hang)  # noqa: B010
    await store.append("order", "doomed", [NewEvent("order.placed", {"n": 1})])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "append"))
