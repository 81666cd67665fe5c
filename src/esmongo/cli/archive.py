"""`esmongo archive`: move closed accounts' streams to `events_archive` (docs/archiving.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from esmongo.bank import Bank
from esmongo.cli.common import ReasonOption, app, audit, console, fail, progress_bars, run_bank


@app.command()
def archive(
    account: Annotated[str | None, typer.Argument(help="The closed account to archive.")] = None,
    closed_before: Annotated[
        datetime | None,
        typer.Option(help="Archive every account closed before this time (UTC if naive)."),
    ] = None,
    reason: ReasonOption = None,
) -> None:
    """Archive one closed account, or every account closed before a date.

    The events move to events_archive in one transaction per account and stay readable;
    the account takes no more commands. Running it again does nothing more.
    """
    if (account is None) == (closed_before is None):
        raise fail("give either an ACCOUNT or --closed-before DATE", 2)

    async def one(bank: Bank) -> None:
        assert account is not None
        report = await bank.archive_account(account)
        if not report.already:
            details = {"account": account, "events": report.events}
            await audit(bank, "StreamArchived", reason, details)
        if report.already:
            console.print(f"{account} was already archived ({report.events} events)")
        else:
            console.print(
                f"{account} archived: {report.events} events, version {report.version}, "
                f"sequences {report.first_sequence}..{report.last_sequence}, "
                f"in {report.elapsed_s * 1000:.0f} ms"
            )

    async def many(bank: Bank) -> None:
        assert closed_before is not None
        before = closed_before.replace(tzinfo=closed_before.tzinfo or UTC)
        with progress_bars() as advance:
            summary = await bank.archive_closed(
                before, lambda done, total: advance("accounts", done, total)
            )
        for report in summary.archived:
            details = {"account": report.stream.aggregate_id, "events": report.events}
            await audit(bank, "StreamArchived", reason, details)
        moved = sum(r.events for r in summary.archived)
        console.print(
            f"{len(summary.archived)} account(s) archived ({moved} events), "
            f"{summary.already} already archived"
        )
        if summary.refused:
            raise fail(f"not closed, not archived: {', '.join(summary.refused)}")

    run_bank("archive", one if account is not None else many)
