"""`subscribe()`: notifications pushed by a change stream on the events collection.

The library's ListenNotifySubscription pulls with select_notifications whenever it is
told something was recorded; PostgreSQL tells it with LISTEN/NOTIFY, here a change stream
of inserts (esmongo's EventStore.watch, filtered by topic on the server) does. The stream
is opened before the first pull, so nothing committed after that pull goes untold; the
pull reads by sequence, so a change seen twice or merged costs one query, never a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, ListenNotifySubscription
from pymongo.asynchronous.change_stream import AsyncChangeStream

from esmongo.codec import Document
from esmongo.eventsourcing.datastore import Datastore
from esmongo.store import EventStore

MAX_AWAIT_MS = 500
"""How long one getMore of the change stream waits on the server for a change."""


class MongoSubscription(ListenNotifySubscription[ApplicationRecorder]):
    """`recorder` reads the notifications; `store` (its events) is watched for inserts."""

    def __init__(
        self,
        recorder: ApplicationRecorder,
        datastore: Datastore,
        store: EventStore,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        self._datastore = datastore
        self._stream: AsyncChangeStream[Document] | None = self._datastore.run(
            store.watch(list(topics) or None, max_await_ms=MAX_AWAIT_MS)
        )
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._listener = self._datastore.run(self._start())

    async def _start(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        stream = self._stream
        assert stream is not None
        try:
            async for _ in stream:
                self._has_been_notified.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke: end the subscription with the error
            if self._thread_error is None:
                self._thread_error = exc
            ListenNotifySubscription.stop(self)

    def stop(self) -> None:
        super().stop()
        if self._closed:
            return
        self._closed = True
        # When the factory closed first, its loop took the stream with it.
        with contextlib.suppress(Exception):
            self._datastore.run(self._close())

    async def _close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        super().__exit__(*args, **kwargs)
