"""Commands that run, watch and repair projections."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.table import Table

from esmongo.application import Application
from esmongo.cli.common import (
    ReasonOption,
    audit,
    console,
    err,
    fail,
    group,
    progress_bars,
    run,
)
from esmongo.projections import (
    DeadLetters,
    Projection,
    ProjectionDaemon,
    projection_status,
    rebuild,
    replay,
)

projections_app = group("projections", "Run, watch and rebuild the read models.")
dead_letters_app = group("dead-letters", "Events a projection could not apply.")


def _pick(application: Application, names: list[str] | None) -> list[Projection]:
    known = {p.name: p for p in application.projections}
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise fail(f"unknown projection(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return [known[n] for n in names] if names else list(known.values())


def _split(dead_letter_id: str) -> tuple[str, int]:
    name, _, sequence = dead_letter_id.rpartition(":")
    if not name or not sequence.isdigit():
        raise fail(f"a dead letter id is projection:sequence, not {dead_letter_id!r}")
    return name, int(sequence)


@projections_app.command("status")
def status() -> None:
    """Checkpoint, lag, lease holder and dead letters of each projection."""

    async def work(application: Application) -> None:
        names = [p.name for p in application.projections]
        table = Table("projection", "state", "checkpoint", "head", "lag", "lag s", "owner", "dead")
        for s in await projection_status(application.store, names):
            table.add_row(
                s.name,
                f"{s.state}, inline" if s.inline else s.state,
                str(s.position),
                str(s.head),
                str(s.lag_events),
                f"{s.lag_seconds:.1f}",
                s.owner or "-",
                str(s.dead_letters),
            )
        console.print(table)

    run(work)


@projections_app.command("run")
def run_projections(
    names: Annotated[list[str] | None, typer.Argument(help="Default: every projection.")] = None,
) -> None:
    """Keep the read models up to date until stopped (Ctrl-C or SIGTERM)."""

    async def work(application: Application) -> None:
        chosen = _pick(application, names)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        daemon = ProjectionDaemon(application.store, chosen)
        err.print(f"running {', '.join(p.name for p in chosen)} as {daemon.owner}; Ctrl-C stops")
        await daemon.run(stop)
        err.print("stopped: batches finished, leases released")

    run(work)


@projections_app.command("rebuild")
def rebuild_cmd(
    name: Annotated[str, typer.Argument(help="The projection.")], reason: ReasonOption = None
) -> None:
    """Blue/green: build beside the live read model from sequence 0, then swap atomically."""

    async def work(application: Application) -> None:
        (projection,) = _pick(application, [name])
        await audit(application, "ProjectionRebuildStarted", reason, {"projection": name})
        with progress_bars() as advance:
            result = await rebuild(
                application.store, projection, progress=lambda done, head: advance(name, done, head)
            )
        console.print(
            f"{name}: generation {result.generation} swapped in after {result.events} events "
            f"({result.duration_s:.1f}s); collections {result.collections}"
        )

    run(work)


@projections_app.command("replay")
def replay_cmd(
    name: Annotated[str, typer.Argument(help="The projection.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    reason: ReasonOption = None,
) -> None:
    """Empty the read model in place and replay every event (development only)."""

    async def work(application: Application) -> None:
        (projection,) = _pick(application, [name])
        if not yes:
            typer.confirm(f"empty {name} and replay it in place? readers see it refill", abort=True)
        await audit(application, "ProjectionReplayed", reason, {"projection": name})
        with progress_bars() as advance:
            position = await replay(
                application.store, projection, progress=lambda done, head: advance(name, done, head)
            )
        console.print(f"{name}: replayed up to sequence {position}")

    run(work)


@dead_letters_app.command("list")
def dead_letters_list(
    projection: Annotated[str | None, typer.Option(help="Only this projection.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    traceback: Annotated[bool, typer.Option("--traceback", help="Show tracebacks.")] = False,
) -> None:
    """Dead letters, oldest first."""

    async def work(application: Application) -> None:
        letters = await DeadLetters(application.db).find(projection, limit=limit)
        table = Table("id", "event", "stream", "attempts", "last failure", "error")
        for d in letters:
            table.add_row(
                f"{d.projection}:{d.sequence}",
                d.event_type,
                f"{d.aggregate_type}/{d.aggregate_id}",
                str(d.attempts),
                d.last_failure_at.isoformat(timespec="seconds"),
                d.error,
            )
        console.print(table)
        if traceback:
            for d in letters:
                console.rule(f"{d.projection}:{d.sequence}")
                console.print(d.traceback, markup=False, highlight=False)

    run(work)


@dead_letters_app.command("retry")
def dead_letters_retry(
    dead_letter_id: Annotated[str, typer.Argument(help="projection:sequence")],
    reason: ReasonOption = None,
) -> None:
    """Apply the event through its projection again (after a fix); removed on success."""
    name, sequence = _split(dead_letter_id)

    async def work(application: Application) -> None:
        (projection,) = _pick(application, [name])
        await DeadLetters(application.db).retry(application.store, projection, sequence)
        details = {"projection": name, "sequence": sequence}
        await audit(application, "DeadLetterRetried", reason, details)
        console.print(f"{dead_letter_id}: applied and removed")

    run(work)


@dead_letters_app.command("discard")
def dead_letters_discard(
    dead_letter_id: Annotated[str, typer.Argument(help="projection:sequence")],
    reason: ReasonOption = None,
) -> None:
    """Drop a dead letter without applying its event."""
    name, sequence = _split(dead_letter_id)

    async def work(application: Application) -> None:
        await DeadLetters(application.db).discard(name, sequence)
        details = {"projection": name, "sequence": sequence}
        await audit(application, "DeadLetterDiscarded", reason, details)
        console.print(f"{dead_letter_id}: discarded")

    run(work)
