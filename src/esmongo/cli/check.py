"""`esmongo check [--repair]`: the event store's invariants on a live database (an fsck).

Exit codes: 0 healthy (after the repair, with --repair), 1 problems found, 2 configuration.
"""

from __future__ import annotations

from typing import Annotated

import typer

from esmongo.application import Application
from esmongo.cli.common import app, console, err, fail, progress_bars, run
from esmongo.ops.check import CheckReport, check, repair
from esmongo.ops.check.chain import parse_anchor, verify_chain


def _say(line: str) -> None:
    """One line per finding, never wrapped, printed verbatim."""
    console.print(line, soft_wrap=True, markup=False, emoji=False, highlight=False)


def _show(report: CheckReport) -> None:
    for finding in report.findings:
        _say(finding.line())
    for invariant, count in report.unlisted.items():
        _say(f"{invariant}: {count} more finding(s) not listed")
    state = "healthy" if report.ok else f"{len(report.findings)} problem(s)"
    err.print(
        f"[dim]{report.events} events, {report.streams} streams, head #{report.head}, "
        f"counter {report.counter}, in {report.elapsed_s:.1f} s: {state}[/]"
    )


@app.command("check")
def check_command(
    fix: Annotated[
        bool, typer.Option("--repair", help="Fix what can be fixed without losing anything.")
    ] = False,
    log: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="Check the log of this events collection, numbered by a sequence of its "
            "own (an eventsourcing application's, e.g. bankaccounts_events). Not with --repair.",
        ),
    ] = None,
) -> None:
    """Verify the store's invariants: sequence, counter, streams, sealed collections,
    checkpoints, idempotency claims, snapshots, the chain. Exit 0 healthy, 1 problems found."""
    if fix and log is not None:
        err.print("error: --repair is for the main log only, not with --log")
        raise typer.Exit(2)

    # The service's idempotency records; only their collection's name is imported.
    from esmongo.api.idempotency import COLLECTION as IDEMPOTENCY_KEYS

    async def work(application: Application) -> bool:
        with progress_bars() as advance:
            report = await check(
                application.db, progress=advance, idempotency=[IDEMPOTENCY_KEYS], log=log
            )
        _show(report)
        if report.ok or not fix:
            return report.ok
        for outcome in await repair(application.db, report):
            _say(outcome.line())
        with progress_bars() as advance:
            after = await check(application.db, progress=advance, idempotency=[IDEMPOTENCY_KEYS])
        _say("after the repair:" if after.findings else "after the repair: healthy")
        _show(after)
        return after.ok

    if not run(work, init=False):
        raise typer.Exit(1)


@app.command("verify")
def verify_command(
    anchor: Annotated[
        list[str] | None,
        typer.Option(
            help="SEQUENCE:HASH of a head recorded earlier (repeatable): history up to it "
            "must be unchanged, even re-hashed."
        ),
    ] = None,
    log: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="Walk the log of this events collection, numbered by a sequence of its own "
            "(an eventsourcing application's, e.g. bankaccounts_events).",
        ),
    ] = None,
) -> None:
    """Walk the tamper-evident chain of every event in global order; name the first broken
    sequence. Prints the head as SEQUENCE:HASH: keep it elsewhere, pass it as --anchor
    later. Exit 0 intact, 1 broken."""
    try:
        anchors = [parse_anchor(text) for text in anchor or []]
    except ValueError as exc:
        raise fail(str(exc), 2) from None

    async def work(application: Application) -> bool:
        with progress_bars() as advance:
            report = await verify_chain(application.db, anchors=anchors, progress=advance, log=log)
        for found in report.breaks:
            _say(f"broken at {found.line()}")
        if report.unlisted:
            _say(f"{report.unlisted} more break(s) not listed")
        unchained = report.events - report.chained
        before = f" ({unchained} written before the chain existed)" if unchained else ""
        err.print(
            f"[dim]{report.events} events{before}, {report.anchors_checked} anchor(s), "
            f"in {report.elapsed_s:.1f} s[/]"
        )
        if report.ok:
            _say(f"intact: head {report.head}:{report.head_hash}")
        else:
            _say(f"BROKEN: first at #{report.first_broken}")
        return report.ok

    if not run(work, init=False):
        raise typer.Exit(1)
