"""Every failure of a command becomes one line on stderr and an exit code, never a traceback.

Exit codes: 0 done, 1 the work failed, 2 configuration (no server, not a replica set, a busy
port) or a command line that does not parse. `ESMONGO_DEBUG=1` prints the traceback too.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, NoReturn

import typer
from pymongo.errors import ConfigurationError as MongoConfigurationError
from pymongo.errors import ConnectionFailure, PyMongoError
from rich.console import Console
from rich.markup import escape

from esmongo.errors import ConfigurationError, EsmongoError

err = Console(stderr=True, soft_wrap=True)  # soft wrap: a long message stays one line
DEBUG_VARIABLE = "ESMONGO_DEBUG"
MAX_MESSAGE = 500
# Commands that serve HTTP (serve, demo, keys) need an extra the core install leaves out.
EXTRA_OF = {
    "fastapi": "service",
    "starlette": "service",
    "pydantic": "service",
    "uvicorn": "service",
    "prometheus_client": "service",
    "httpx": "cli",
}


def debugging() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def one_line(text: str) -> str:
    """Driver messages span lines (a topology description): one line, bounded."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_MESSAGE else flat[:MAX_MESSAGE] + "..."


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print the reason (verbatim: no markup, no emoji codes) and make the exit."""
    err.print(f"[red]error:[/] {escape(one_line(message))}", emoji=False)
    return typer.Exit(code)


def explain(exc: BaseException) -> tuple[str, int]:
    """The one line and exit code for an exception a command did not handle itself."""
    if isinstance(exc, ConfigurationError):
        return str(exc), 2
    missing = (exc.name or "").partition(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
    if missing in EXTRA_OF:
        return f"{missing} is not installed: pip install 'esmongo[{EXTRA_OF[missing]}]'", 2
    if isinstance(exc, EsmongoError):
        return str(exc), 1
    if isinstance(exc, ConnectionFailure | MongoConfigurationError):
        return f"cannot use the database: {exc}", 2
    if isinstance(exc, PyMongoError):
        return f"the database refused: {exc}", 1
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return f"{where}{exc.strerror}", 1
    if isinstance(exc, ValueError | OSError):
        return f"{exc}" or type(exc).__name__, 1
    hint = "" if debugging() else f" (set {DEBUG_VARIABLE}=1 for the traceback)"
    return f"unexpected {type(exc).__name__}: {exc}{hint}", 1


def fail_with(exc: BaseException) -> typer.Exit:
    """`fail` for an exception; with ESMONGO_DEBUG set, its traceback first."""
    if debugging():
        traceback.print_exception(exc, file=sys.stderr)
    message, code = explain(exc)
    return fail(message, code)


class Cli(typer.Typer):
    """The app, with usage errors and exceptions outside a command's work as one line too."""

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        command = typer.main.get_command(self)
        kwargs["standalone_mode"] = False  # errors come here instead of being printed
        try:
            result = command.main(*args, **kwargs)
        except typer.Abort:
            raise SystemExit(fail("aborted").exit_code) from None
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `esmongo` alone: the help
                exc.show()  # type: ignore[attr-defined]
                raise SystemExit(exc.exit_code) from None  # type: ignore[attr-defined]
            if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # usage errors
                raise SystemExit(fail(_usage(exc), exc.exit_code).exit_code) from None
            raise SystemExit(fail_with(exc).exit_code) from None
        raise SystemExit(result if isinstance(result, int) else 0)


def _usage(exc: Any) -> str:
    """A command line error (typer's or click's, which typer versions vendor differently)."""
    context = getattr(exc, "ctx", None)
    where = f" (see {context.command_path} --help)" if context is not None else ""
    return f"{exc.format_message()}{where}"
