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
    access_log: Annotated[
        bool,
        typer.Option(
            envvar="ESMONGO_ACCESS_LOG",
            help="Log every request at info level (uvicorn's access log). Off, the service "
            "spends less CPU a request; leave request logs to a proxy in front.",
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
            config = uvicorn.Config(
                service, host=host, port=port, log_level=log_level, access_log=access_log
            )
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
def init(
    log_db: Annotated[
        str | None,
        typer.Option(
            "--log-db",
            help="Keep the append-only collections (events, archive) in this database of "
            "their own; only before the first event (docs/security.md).",
        ),
    ] = None,
    roles: Annotated[
        bool,
        typer.Option(
            "--roles",
            help="Create (or update) the MongoDB roles writer, reader and operator; needs a "
            "log database and a user that may manage roles.",
        ),
    ] = False,
) -> None:
    """Create collections, indexes, the sequence counter and the application's event schemas
    (idempotent); with --roles, the append-only roles."""
    from esmongo.ops.roles import ensure_roles
    from esmongo.store.layout import log_database_name, use_log_database

    async def work(application: Application) -> None:
        if log_db is not None:
            await use_log_database(application.db, log_db)
        await application.init()
        log = await log_database_name(application.db)
        where = "the main database" if log == application.db.name else "the log database"
        console.print(f"ready: {len(application.registry)} event schemas registered")
        console.print(f"the log (events, archive) is in {where} {log}")
        if roles:
            for role in await ensure_roles(application.db):
                verb = "created" if role.created else "updated"
                console.print(f"role {role.name} (admin) {verb}")
            console.print(
                "grant them with createUser or grantRolesToUser (docs/security.md says which "
                "process runs with which)"
            )

    run(work, init=False)


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
    """Back up events, schemas and keys (mongodump layout; read models are rebuilt), and
    every log numbered by a sequence of its own (eventsourcing applications') with its
    tracking records."""
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
        for name, head in report.own_logs.items():
            console.print(f"backed up log {name} up to sequence {head}")
        log = Settings.from_env().erasure_log
        if not log.exists():  # a restore needs it: no subject forgotten yet is an empty log
            log.parent.mkdir(parents=True, exist_ok=True)
            log.touch()
        err.print(
            f"[dim]a restore replays the erasure log {log}: keep it outside the database "
            "and its backups (docs/security.md)[/]"
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
    erasure_log: Annotated[
        Path | None,
        typer.Option(
            help="The current erasure log (default: ESMONGO_ERASURE_LOG, else "
            "ESMONGO_HOME/erasures.jsonl). Required: its forgotten keys stay forgotten."
        ),
    ] = None,
) -> None:
    """Restore a backup into the configured database, which must hold no events yet, nor
    any state derived from events (unless --drop-state). The erasure log is replayed."""
    from esmongo.api.auth import COLLECTION as API_KEYS
    from esmongo.ops import erasures
    from esmongo.ops.backup import restore

    if not directory.exists():
        raise fail(f"{directory}: no such directory (give a directory made by esmongo backup)")
    if not directory.is_dir():
        raise fail(f"{directory} is not a directory (give a directory made by esmongo backup)")
    try:
        erased = erasures.read(erasure_log or Settings.from_env().erasure_log)
    except erasures.ErasureLogError as exc:
        raise fail(str(exc)) from None

    async def work(application: Application) -> None:
        with progress_bars() as advance:
            report = await restore(
                application.db,
                directory,
                advance,
                drop_state=drop_state,
                keep=[API_KEYS],
                erasures=erased,
            )
        await application.init()
        err.print("[dim]indexes and schemas checked[/]")
        for name, head in report.own_logs.items():
            console.print(f"restored log {name} up to sequence {head}; checksum verified")
        console.print(
            f"restored {report.counts.get('events', 0)} events up to sequence "
            f"{report.head_sequence}; checksum verified; {len(erased)} erasures replayed "
            f"({report.keys_erased} forgotten keys left out). Rebuild the projections next."
        )

    run(work, init=False)
