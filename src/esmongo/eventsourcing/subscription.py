"""`subscribe()`: notifications pushed by a change stream on the events collection.

The library's ListenNotifySubscription (and its DCB one) pulls with a read whenever it is
told something was recorded; PostgreSQL tells it with LISTEN/NOTIFY, here a change stream
of inserts (esmongo's EventStore.watch, filtered by topic on the server) does. The stream
is opened before the first pull, so nothing committed after that pull goes untold; the
pull reads by sequence, so a change seen twice or merged costs one query, never a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, ListenNotifySubscription
from pymongo.asynchronous.change_stream import AsyncChangeStream

from esmongo.codec import Document
from esmongo.eventsourcing.datastore import Datastore
from esmongo.store import EventStore

MAX_AWAIT_MS = 500
"""How long one getMore of the change stream waits on the server for a change."""


class ChangeWaker:
    """A change stream of `store`'s inserts (of `topics`; all when empty), opened at once,
    that sets an event for each change once `start`ed, on the datastore's loop."""

    def __init__(self, datastore: Datastore, store: EventStore, topics: Sequence[str]) -> None:
        self._datastore = datastore
        self._stream: AsyncChangeStream[Document] | None = datastore.run(
            store.watch(list(topics) or None, max_await_ms=MAX_AWAIT_MS)
        )
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    def start(self, notified: threading.Event, broke: Callable[[Exception], None]) -> None:
        """Set `notified` for each change; call `broke` with the error if the stream breaks."""
        self._listener = self._datastore.run(self._start(notified, broke))

    async def _start(
        self, notified: threading.Event, broke: Callable[[Exception], None]
    ) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._listen(notified, broke))

    async def _listen(self, notified: threading.Event, broke: Callable[[Exception], None]) -> None:
        stream = self._stream
        assert stream is not None
        try:
            async for _ in stream:
                notified.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stream broke: end the subscription with the error
            broke(exc)

    def close(self) -> None:
        """Idempotent. When the factory closed first, its loop took the stream with it."""
        if self._closed:
            return
        self._closed = True
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
        self._waker = ChangeWaker(datastore, store, topics)
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._waker.start(self._has_been_notified, self._broke)

    def _broke(self, exc: Exception) -> None:
        if self._thread_error is None:
            self._thread_error = exc
        ListenNotifySubscription.stop(self)

    def stop(self) -> None:
        super().stop()
        self._waker.close()

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        super().__exit__(*args, **kwargs)
