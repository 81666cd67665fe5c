"""`esmongo forget SUBJECT` and `esmongo crypto`: crypto-shredding of personal data.

A subject is forgotten by deleting its data keys (esmongo.ops.erasures); master keys come
from ESMONGO_MASTER_KEY and are rotated by re-wrapping every data key (`crypto rewrap`).
"""

from __future__ import annotations

from typing import Annotated

import typer

from esmongo.application import Application
from esmongo.cli.common import ReasonOption, app, console, err, fail, group, run
from esmongo.connect.connection import Settings
from esmongo.ops.audit import Actor
from esmongo.store.data_keys import MASTER_KEY_ENV, new_master_key

crypto_app = group("crypto", "Master keys of the personal data's encryption: new, rewrap.")


@app.command("forget")
def forget_cmd(
    subject: Annotated[
        str,
        typer.Argument(
            help="user:<userId> (a person: their names and request metadata), or "
            "<aggregateType>/<aggregateId> (a stream's own personal fields)."
        ),
    ],
    reason: ReasonOption = None,
) -> None:
    """Delete a data subject's keys: their personal fields read as [redacted] from now on.
    The events stay (the chain verifies); the erasure is audited and logged for restores."""
    from esmongo.ops.erasures import forget

    log = Settings.from_env().erasure_log

    async def work(application: Application) -> None:
        done = await forget(application.store, subject, Actor.shell(), reason=reason, log=log)
        if done.erasure.already:
            console.print(f"{subject} was forgotten before: no key left (audited again)")
        else:
            console.print(
                f"forgot {subject}: {len(done.erasure.keys)} data key(s) deleted, logged in "
                f"{log} and audited at sequence {done.audit_sequence}"
            )

    run(work)


@crypto_app.command("new-master-key")
def new_master_key_cmd() -> None:
    """Print a new random master key, `id:base64`, for ESMONGO_MASTER_KEY (put it first,
    keep the old one after it, run `esmongo crypto rewrap`, then drop the old one)."""
    console.print(new_master_key())


@crypto_app.command("rewrap")
def rewrap_cmd() -> None:
    """Re-wrap every data key with the first master key of ESMONGO_MASTER_KEY (the others
    open the old wraps). Idempotent."""

    async def work(application: Application) -> None:
        keys = application.store.keys
        if keys.master is None:
            raise fail(f"{MASTER_KEY_ENV} is not set: give the new master key first, then the old")
        done, current = await keys.rewrap()
        console.print(
            f"re-wrapped {done} data key(s) with master key {keys.master.current!r}; "
            f"{current} already were"
        )
        if len(keys.master.keys) > 1:
            err.print(f"[dim]the other master keys in {MASTER_KEY_ENV} may now be dropped[/]")

    run(work)
