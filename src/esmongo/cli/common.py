"""What every command shares: the app, consoles, opening the database, progress bars.

Commands work on the application `ESMONGO_APP=module:factory` names (esmongo.application;
the bank by default): generic commands through `run`, the bank's own through `run_bank`.
Exit codes: 0 done, 1 the work failed (the message says why), 2 bad configuration; every
error is one line on stderr (cli/errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Annotated, Any, TypeVar

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

from esmongo.application import (
    APP_ENV,
    DEFAULT_APP,
    Application,
    application_of,
    load_factory,
)
from esmongo.bank import Bank
from esmongo.cli.errors import Cli, err, fail, fail_with
from esmongo.connect.connection import Connection, Settings, redact
from esmongo.errors import ConfigurationError
from esmongo.ops.audit import Actor, AuditTrail

__all__ = [
    "ReasonOption",
    "app",
    "audit",
    "console",
    "err",
    "fail",
    "group",
    "progress_bars",
    "require_bank",
    "run",
    "run_async",
    "run_bank",
]

app = Cli(
    help="esmongo: event sourcing on MongoDB.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
T = TypeVar("T")
Advance = Callable[..., None]


def group(name: str, help: str) -> typer.Typer:
    """A command group (`esmongo NAME ...`)."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; any error becomes one line and an exit code (cli/errors.py)."""
    try:
        return asyncio.run(main)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise fail_with(exc) from None


def run(work: Callable[[Application], Awaitable[T]], *, init: bool = True) -> T:
    """Open the database (starting the embedded server when needed), run, close.

    The application is loaded first, so a wrong `ESMONGO_APP` fails before the database
    starts. `init` creates indexes and registers the schemas first; a restore must not.
    """
    try:
        factory = load_factory()
    except ConfigurationError as exc:
        raise fail_with(exc) from None

    async def main() -> T:
        settings = Settings.from_env()
        async with Connection(settings) as conn:
            where = "embedded server" if conn.server else "MONGODB_URI"
            err.print(f"[dim]database {settings.database} on {redact(conn.uri)} ({where})[/]")
            application = application_of(factory, conn.db)
            if init:
                await application.init()
            try:
                return await work(application)
            finally:
                await application.close()

    return run_async(main())


def require_bank(command: str) -> None:
    """Refuse a bank command when `ESMONGO_APP` names another application (exit 2)."""
    named = os.environ.get(APP_ENV) or DEFAULT_APP
    if named != DEFAULT_APP:
        raise fail(f"esmongo {command} is the bank's command; {APP_ENV}={named} is not the bank", 2)


def run_bank(command: str, work: Callable[[Bank], Awaitable[T]]) -> T:
    """`run` for the bank's own commands (accounts, the API, the demo)."""
    require_bank(command)

    async def on_bank(application: Application) -> T:
        assert isinstance(application, Bank)
        return await work(application)

    return run(on_bank)


@contextlib.contextmanager
def progress_bars() -> Iterator[Advance]:
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


ReasonOption = Annotated[
    str | None, typer.Option(help="Why: recorded with the action in the audit trail.")
]


async def audit(
    application: Application, action: str, reason: str | None, details: dict[str, Any]
) -> None:
    """Record an administrative action of this shell user (esmongo.ops.audit)."""
    await AuditTrail(application.store).record(
        action, Actor.shell(), reason=reason, details=details
    )
