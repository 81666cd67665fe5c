"""Commands that run the service or manage the whole database."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Annotated

import typer

from esmongo.application import Application
from esmongo.cli.common import (
    app,
    console,
    err,
    fail,
    progress_bars,
    require_bank,
    run,
    run_async,
)
from esmongo.connect.connection import Connection, Settings, redact


def listen_socket(host: str, port: int) -> socket.socket:
    """The bound socket the service will listen on; a busy port is a configuration error.

    Bound before anything is announced (or the database opened), so a port in use fails
    at once, with exit code 2 and one line, instead of after printing "serving".
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise fail(f"cannot listen on {host}: {exc.strerror}", 2) from None
    family, kind, proto, _, address = found[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise fail(
                f"{host}:{port} is in use: stop what listens there or choose another --port", 2
            ) from None
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 2) from None
    return sock


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free).")] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    max_body_bytes: Annotated[
        int | None,
        typer.Option(
            min=1,
            envvar="ESMONGO_MAX_BODY_BYTES",
            help="Larger request bodies are refused with 413 before they are parsed "
            "[default: 65536].",
        ),
    ] = None,
    rate_limit: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            envvar="ESMONGO_RATE_LIMIT",
            help="Requests per second per API key in this process, for keys that set none "
            "(429 with Retry-After beyond it) [default: unlimited].",
        ),
    ] = None,
    projections: Annotated[
        bool,
        typer.Option(
            help="Run the projection daemon in this process (off: run "
            "`esmongo projections run` in its own).",
        ),
    ] = True,
    inline: Annotated[
        str | None,
        typer.Option(
            envvar="ESMONGO_INLINE_PROJECTIONS",
            help="Read models to update in the commands' own transactions, comma-separated "
            "(e.g. accounts_read): a read after a command sees it at once "
            "[default: none, all async].",
        ),
    ] = None,
) -> None:
    """Run the console, the accounts API and the projection daemon (Ctrl-C stops)."""
    import uvicorn

    from esmongo.api import ApiKeys, create_app
    from esmongo.api.app import run_projection_daemon
    from esmongo.api.auth import ensure_dev_admin_key
    from esmongo.api.body_limit import DEFAULT_MAX_BODY_BYTES
    from esmongo.console import mount

    require_bank("serve")
    _check_inline(inline)
    body_limit = DEFAULT_MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes
    sock = listen_socket(host, port)
    port = sock.getsockname()[1]

    def say(line: str) -> None:
        console.print(line, soft_wrap=True)  # whole lines: the URL and key get copied

    async def main() -> None:
        settings = Settings.from_env()
        async with Connection(settings) as conn:
            keys = ApiKeys(conn.db)
            await keys.init()
            service = create_app(
                db=conn.db,
                background=run_projection_daemon if projections else None,
                max_body_bytes=body_limit,
                rate_limit=rate_limit,
                inline=inline,
            )
            mount(service)
            url = f"http://{host}:{port}"
            say(f"esmongo serving [bold]{url}[/] (console: {url}/ , API docs: {url}/docs)")
            say(f"database {settings.database} on {redact(conn.uri)}")
            if conn.server is not None:
                key = await ensure_dev_admin_key(keys, settings.home / "dev-admin-key")
                say(f"development admin key: [bold]{key}[/]")
                say(f'  try: curl -H "Authorization: Bearer {key}" {url}/accounts')
            config = uvicorn.Config(service, host=host, port=port, log_level=log_level)
            await uvicorn.Server(config).serve(sockets=[sock])

    with sock:
        run_async(main())


def _check_inline(names: str | None) -> None:
    """A name that is no read model of the bank fails at once, before anything starts."""
    from esmongo.bank.read_models import bank_projections
    from esmongo.errors import ConfigurationError
    from esmongo.projections.inline import configure_inline

    try:
        configure_inline(bank_projections(), names)
    except ConfigurationError as exc:
        raise fail(str(exc), 2) from None


@app.command()
def demo(
    operations: Annotated[int, typer.Option(min=1, help="Random requests to send.")] = 200,
) -> None:
    """Drive realistic traffic through the HTTP API; print balances, a history and the lag."""
    from esmongo.cli.demo import run_demo

    require_bank("demo")
    outcomes = run_async(run_demo(console, operations))
    if outcomes["read_model_mismatch"]:
        raise fail("the read model does not match the events")


@app.command()
def init() -> None:
    """Create collections, indexes, the sequence counter and the application's event schemas
    (idempotent)."""

    async def work(application: Application) -> None:
        console.print(f"ready: {len(application.registry)} event schemas registered")

    run(work)


def _check_backup_target(directory: Path) -> None:
    """Refuse a target that cannot become an empty directory before opening the database."""
    if directory.exists():
        if not directory.is_dir():
            raise fail(f"{directory} is not a directory: give a new or empty directory")
        if any(directory.iterdir()):
            raise fail(f"{directory} is not empty: give a new or empty directory")
        return
    for parent in directory.parents:
        if parent.exists():
            if not parent.is_dir():
                raise fail(f"{parent} is not a directory, so {directory} cannot be created")
            return


@app.command("backup")
def backup_cmd(
    directory: Annotated[Path, typer.Argument(help="A new or empty directory.")],
) -> None:
    """Back up events, schemas and keys (mongodump layout; read models are rebuilt)."""
    from esmongo.api.auth import COLLECTION as API_KEYS
    from esmongo.ops.backup import backup

    _check_backup_target(directory)

    async def work(application: Application) -> None:
        with progress_bars() as advance:
            report = await backup(application.db, directory, advance, keep=[API_KEYS])
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
    from esmongo.api.auth import COLLECTION as API_KEYS
    from esmongo.ops.backup import restore

    if not directory.exists():
        raise fail(f"{directory}: no such directory (give a directory made by esmongo backup)")
    if not directory.is_dir():
        raise fail(f"{directory} is not a directory (give a directory made by esmongo backup)")

    async def work(application: Application) -> None:
        with progress_bars() as advance:
            report = await restore(
                application.db,
                directory,
                advance,
                drop_state=drop_state,
                keep=[API_KEYS],
            )
        await application.init()
        err.print("[dim]indexes and schemas checked[/]")
        console.print(
            f"restored {report.counts.get('events', 0)} events up to sequence "
            f"{report.head_sequence}; checksum verified. Rebuild the projections next."
        )

    run(work, init=False)
