"""Commands that run the service or manage the whole database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from esmongo.bank import Bank
from esmongo.cli.common import app, console, err, fail, group, progress_bars, run, run_async
from esmongo.mongo import Connection, Settings, redact

keys_app = group("keys", "API keys.")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the accounts API and the projection daemon (Ctrl-C stops)."""
    import uvicorn

    from esmongo.api import ApiKeys, create_app
    from esmongo.api.app import run_projection_daemon
    from esmongo.api.auth import ensure_dev_admin_key

    async def main() -> None:
        settings = Settings.from_env()
        async with Connection(settings) as conn:
            keys = ApiKeys(conn.db)
            await keys.init()
            service = create_app(db=conn.db, background=run_projection_daemon)
            url = f"http://{host}:{port}"
            console.print(f"esmongo serving [bold]{url}[/] (API docs: {url}/docs)")
            console.print(f"database {settings.database} on {redact(conn.uri)}")
            if conn.server is not None:
                key = await ensure_dev_admin_key(keys, settings.home / "dev-admin-key")
                console.print(f"development admin key: [bold]{key}[/]")
                console.print(f'  try: curl -H "Authorization: Bearer {key}" {url}/accounts')
            config = uvicorn.Config(service, host=host, port=port, log_level=log_level)
            await uvicorn.Server(config).serve()

    run_async(main())


@app.command()
def demo(
    operations: Annotated[int, typer.Option(min=1, help="Random requests to send.")] = 200,
) -> None:
    """Drive realistic traffic through the HTTP API; print balances, a history and the lag."""
    from esmongo.demo import run_demo

    outcomes = run_async(run_demo(console, operations))
    if outcomes["read_model_mismatch"]:
        raise fail("the read model does not match the events")


@app.command()
def init() -> None:
    """Create collections, indexes, the sequence counter and the account schemas (idempotent)."""

    async def work(bank: Bank) -> None:
        console.print(f"ready: {len(bank.registry)} event schemas registered")

    run(work)


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
        raise fail(f"role must be one of {', '.join(r.value for r in Role)}") from None

    async def work(bank: Bank) -> None:
        keys = ApiKeys(bank.db)
        await keys.init()
        console.print(await keys.create(chosen, user, name))

    run(work)


@app.command("backup")
def backup_cmd(
    directory: Annotated[Path, typer.Argument(help="A new or empty directory.")],
) -> None:
    """Back up events, schemas and keys (mongodump layout; read models are rebuilt)."""
    from esmongo.backup import backup

    async def work(bank: Bank) -> None:
        with progress_bars() as advance:
            report = await backup(bank.db, directory, advance)
        console.print(
            f"backed up {report.counts.get('events', 0)} events up to sequence "
            f"{report.head_sequence} into {directory} (checksum {report.events_checksum[:16]})"
        )

    run(work)


@app.command("restore")
def restore_cmd(
    directory: Annotated[Path, typer.Argument(help="A backup made by `esmongo backup`.")],
    drop_state: Annotated[
        bool,
        typer.Option(
            "--drop-state",
            help="Empty the snapshots, checkpoints, read models... the database holds first.",
        ),
    ] = False,
) -> None:
    """Restore a backup into the configured database, which must hold no events yet, nor
    any state derived from events (unless --drop-state)."""
    from esmongo.backup import restore

    async def work(bank: Bank) -> None:
        with progress_bars() as advance:
            report = await restore(bank.db, directory, advance, drop_state=drop_state)
        await bank.init()
        err.print("[dim]indexes and schemas checked[/]")
        console.print(
            f"restored {report.counts.get('events', 0)} events up to sequence "
            f"{report.head_sequence}; checksum verified. Rebuild the projections next."
        )

    run(work, init=False)
