"""What every command shares: the app, consoles, opening the database, progress bars.

Exit codes: 0 done, 1 the work failed (the message says why), 2 bad configuration; every
error is one line on stderr (cli/errors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

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

from esmongo.bank import Bank
from esmongo.cli.errors import Cli, err, fail, fail_with
from esmongo.connect.connection import Connection, Settings, redact

__all__ = ["app", "console", "err", "fail", "group", "progress_bars", "run", "run_async"]

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

    return run_async(main())


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
