"""Commands that read the event store and manage snapshots."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from esmongo import EventStore
from esmongo.application import Application
from esmongo.cli.common import console, fail, group, progress_bars, run
from esmongo.events import RecordedEvent

MAX_SEQUENCE = 2**62  # BSON integers are 64-bit: larger values cannot even be compared

events_app = group("events", "Read the event store.")
snapshots_app = group("snapshots", "Manage aggregate snapshots.")


LOG_OPTION = typer.Option(
    "--log",
    help="Read the log of this events collection, numbered by a sequence of its own "
    "(an eventsourcing application's, e.g. bankaccounts_events).",
)


def _store(application: Application, log: str | None) -> EventStore:
    """The application's store, or a reader of another log in its database."""
    if log is None:
        return application.store
    return EventStore(application.db, collection=log, sequence=log, log_db=application.log_db)


def _line(e: RecordedEvent) -> str:
    return (
        f"{e.sequence:>8}  {e.timestamp.isoformat(timespec='milliseconds')}  "
        f"{e.aggregate_type}/{e.aggregate_id} v{e.aggregate_version}  {e.event_type}"
    )


@events_app.command("list")
def events_list(
    event_type: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
    correlation: Annotated[
        str | None, typer.Option("--correlation", help="Only this correlation id.")
    ] = None,
    after: Annotated[
        int, typer.Option(min=0, max=MAX_SEQUENCE, help="Only events after this sequence.")
    ] = 0,
    since: Annotated[datetime | None, typer.Option(help="From this time (UTC if naive).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Before this time.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 50,
    log: Annotated[str | None, LOG_OPTION] = None,
) -> None:
    """List events in global order, by type, time window and correlation id."""
    start, end = (t.replace(tzinfo=t.tzinfo or UTC) if t else None for t in (since, until))

    async def work(application: Application) -> None:
        events = _store(application, log).read_all(
            after,
            limit,
            event_types=[event_type] if event_type else None,
            start=start,
            end=end,
            correlation_id=correlation,
        )
        table = Table("seq", "stream", "v", "type", "timestamp")
        async for e in events:
            table.add_row(
                str(e.sequence),
                f"{e.aggregate_type}/{e.aggregate_id}",
                str(e.aggregate_version),
                e.event_type,
                e.timestamp.isoformat(timespec="milliseconds"),
            )
        console.print(table)

    run(work)


@events_app.command("tail")
def events_tail(
    count: Annotated[int, typer.Option("-n", min=0, help="Show the last N events first.")] = 10,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    event_type: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
    log: Annotated[str | None, LOG_OPTION] = None,
) -> None:
    """The newest events; with --follow, new ones as they are committed (Ctrl-C stops)."""

    async def work(application: Application) -> None:
        store = _store(application, log)
        types = [event_type] if event_type else None
        last = max(0, await store.head_sequence() - count)
        while True:
            async for e in store.read_all(last, event_types=types):
                console.print(_line(e))
                last = e.sequence
            if not follow:
                return
            # Woken by the change stream, read by sequence: nothing is missed in between.
            async with await store.watch(types) as stream:
                if await store.head_sequence() <= last:
                    await stream.try_next()

    with contextlib.suppress(KeyboardInterrupt):
        run(work)


@snapshots_app.command("create")
def snapshots_create(
    aggregate_type: Annotated[
        str | None,
        typer.Option("--type", help="Aggregate type [default: the application's only one]."),
    ] = None,
    min_events: Annotated[
        int, typer.Option(min=1, max=MAX_SEQUENCE, help="Only aggregates with this many.")
    ] = 50,
) -> None:
    """Snapshot every aggregate of a type that has at least --min-events events."""

    async def work(application: Application) -> None:
        known = application.repositories
        chosen = aggregate_type
        if chosen is None and len(known) == 1:
            (chosen,) = known
        if chosen is None:
            raise fail(f"give --type (known: {', '.join(known) or 'none'})")
        if chosen not in known:
            raise fail(f"unknown aggregate type {chosen!r} (known: {', '.join(known) or 'none'})")
        with progress_bars() as advance:
            written = await known[chosen].snapshot_all(
                min_events, lambda done, total: advance("snapshots", done, total)
            )
        console.print(f"{written} snapshot(s) written")

    run(work)
