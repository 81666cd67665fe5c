"""The `esmongo` command line. Exit codes: 0 ok, 1 the work failed, 2 bad configuration."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from esmongo.bank import Bank
from esmongo.errors import ConfigurationError
from esmongo.events import RecordedEvent
from esmongo.mongo import Connection, Settings, redact

app = typer.Typer(
    help="esmongo: event sourcing on MongoDB.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
events_app = typer.Typer(help="Read the event store.", no_args_is_help=True)
snapshots_app = typer.Typer(help="Manage aggregate snapshots.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(snapshots_app, name="snapshots")
app.add_typer(keys_app, name="keys")

console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def run(work: Callable[[Bank], Awaitable[T]], *, init: bool = True) -> T:
    """Open the database (starting the embedded server when needed), run, close.

    `init` creates indexes and registers the schemas first; a restore must not.
    """

    async def main() -> T:
        settings = Settings.from_env()
        async with Connection(settings) as conn:
            where = "embedded server" if conn.server else "MONGODB_URI"
            err.print(f"[dim]database {settings.database} on {redact(conn.uri)} ({where})[/]")
            bank = Bank(conn.db)
            if init:
                await bank.init()
            try:
                return await work(bank)
            finally:
                await bank.accounts.drain()

    try:
        return asyncio.run(main())
    except ConfigurationError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def demo(
    operations: Annotated[int, typer.Option(min=1, help="Random requests to send.")] = 200,
) -> None:
    """Drive realistic traffic through the HTTP API; print balances, a history and the lag."""
    from esmongo.demo import run_demo

    try:
        outcomes = asyncio.run(run_demo(console, operations))
    except ConfigurationError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if outcomes["read_model_mismatch"]:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the accounts API, the projection daemon and the dashboard (Ctrl-C stops)."""
    import uvicorn

    from esmongo.api import ApiKeys, create_app
    from esmongo.api.app import run_projection_daemon
    from esmongo.api.auth import ensure_dev_admin_key

    async def main() -> None:
        settings = Settings.from_env()
        async with Connection(settings) as conn:
            keys = ApiKeys(conn.db)
            await keys.init()
            app_ = create_app(db=conn.db, background=run_projection_daemon)
            url = f"http://{host}:{port}"
            console.print(f"esmongo serving [bold]{url}[/] (API docs: {url}/docs)")
            console.print(f"database {settings.database} on {redact(conn.uri)}")
            if conn.server is not None:
                key = await ensure_dev_admin_key(keys, settings.home / "dev-admin-key")
                console.print(f"development admin key: [bold]{key}[/]")
                console.print(f'  try: curl -H "Authorization: Bearer {key}" {url}/accounts')
            config = uvicorn.Config(app_, host=host, port=port, log_level=log_level)
            await uvicorn.Server(config).serve()

    try:
        asyncio.run(main())
    except ConfigurationError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, teller, auditor or customer.")],
    user: Annotated[str, typer.Option(help="The user id the key acts as.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
) -> None:
    """Create an API key. It is printed once; only its hash is stored."""
    from esmongo.api import ApiKeys, Role

    try:
        chosen = Role(role)
    except ValueError:
        err.print(f"[red]error:[/] role must be one of {', '.join(r.value for r in Role)}")
        raise typer.Exit(1) from None

    async def work(bank: Bank) -> None:
        keys = ApiKeys(bank.db)
        await keys.init()
        key = await keys.create(chosen, user, name)
        console.print(key)

    run(work)


@app.command()
def init() -> None:
    """Create collections, indexes, the sequence counter and the account schemas (idempotent)."""

    async def work(bank: Bank) -> None:
        console.print(f"ready: {len(bank.registry)} event schemas registered")

    run(work)


@events_app.command("list")
def events_list(
    event_type: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
    correlation: Annotated[
        str | None, typer.Option("--correlation", help="Only this correlation id.")
    ] = None,
    after: Annotated[int, typer.Option(help="Only events after this sequence.")] = 0,
    since: Annotated[datetime | None, typer.Option(help="With --type: from this UTC time.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 50,
) -> None:
    """List events in global order, by type and time, or by correlation id."""

    async def work(bank: Bank) -> None:
        store = bank.store
        if correlation:
            events = store.read_by_correlation(correlation, limit=limit)
        elif event_type:
            start = since.replace(tzinfo=since.tzinfo or UTC) if since else None
            events = store.read_by_type(event_type, start, limit=limit)
        else:
            events = store.read_all(after, limit)
        table = Table("seq", "stream", "v", "type", "timestamp")
        async for e in events:
            _event_row(table, e)
        console.print(table)

    run(work)


def _event_row(table: Table, e: RecordedEvent) -> None:
    table.add_row(
        str(e.sequence),
        f"{e.aggregate_type}/{e.aggregate_id}",
        str(e.aggregate_version),
        e.event_type,
        e.timestamp.isoformat(timespec="milliseconds"),
    )


@events_app.command("tail")
def events_tail(
    count: Annotated[int, typer.Option("-n", min=0, help="Show the last N events first.")] = 10,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    event_type: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
) -> None:
    """The newest events; with --follow, new ones as they are committed (Ctrl-C stops)."""

    async def work(bank: Bank) -> None:
        store = bank.store
        types = [event_type] if event_type else None
        last = max(0, await store.head_sequence() - count)
        while True:
            async for e in store.read_all(last, event_types=types):
                console.print(
                    f"{e.sequence:>8}  {e.timestamp.isoformat(timespec='milliseconds')}  "
                    f"{e.aggregate_type}/{e.aggregate_id} v{e.aggregate_version}  {e.event_type}"
                )
                last = e.sequence
            if not follow:
                return
            # Woken by the change stream, read by sequence: nothing is missed in between.
            async with await store.events.watch(
                [{"$match": {"operationType": "insert"}}], max_await_time_ms=1000
            ) as stream:
                if await store.head_sequence() <= last:
                    await stream.try_next()

    with contextlib.suppress(KeyboardInterrupt):
        run(work)


@app.command("backup")
def backup_cmd(
    directory: Annotated[Path, typer.Argument(help="A new or empty directory.")],
) -> None:
    """Back up events, schemas and keys (mongodump layout; read models are rebuilt)."""
    from esmongo.backup import BackupError, backup

    async def work(bank: Bank) -> None:
        with _progress() as advance:
            report = await backup(bank.db, directory, advance)
        console.print(
            f"backed up {report.counts.get('events', 0)} events up to sequence "
            f"{report.head_sequence} into {directory} (checksum {report.events_checksum[:16]})"
        )

    try:
        run(work)
    except BackupError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


@app.command("restore")
def restore_cmd(
    directory: Annotated[Path, typer.Argument(help="A backup made by `esmongo backup`.")],
) -> None:
    """Restore a backup into the configured database, which must hold no events yet."""
    from esmongo.backup import BackupError, restore

    async def work(bank: Bank) -> None:
        with _progress() as advance:
            report = await restore(bank.db, directory, advance)
        await bank.init()
        console.print(
            f"restored {report.counts.get('events', 0)} events up to sequence "
            f"{report.head_sequence}; checksum verified. Rebuild the projections next."
        )

    try:
        run(work, init=False)
    except BackupError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


Advance = Callable[..., None]


@contextlib.contextmanager
def _progress() -> Iterator[Advance]:
    """A progress bar per named task: `advance(name, done, total=None)`."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        tasks: dict[str, TaskID] = {}

        def advance(name: str, done: int, total: int | None = None) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done, total=total)

        yield advance


@snapshots_app.command("create")
def snapshots_create(
    aggregate_type: Annotated[str, typer.Option("--type", help="Aggregate type.")] = "account",
    min_events: Annotated[int, typer.Option(min=1, help="Only aggregates with this many.")] = 50,
) -> None:
    """Snapshot every aggregate of a type that has at least --min-events events."""

    async def work(bank: Bank) -> int:
        if aggregate_type != bank.accounts.aggregate_type:
            err.print(f"[red]error:[/] unknown aggregate type {aggregate_type!r}")
            raise typer.Exit(1)
        with _progress() as advance:
            written = await bank.accounts.snapshot_all(
                min_events, lambda done, total: advance("snapshots", done, total)
            )
        console.print(f"{written} snapshot(s) written")
        return written

    run(work)


if __name__ == "__main__":
    app()
