"""`esmongo keys`: create, list, rotate and revoke API keys; each change is audited."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from esmongo.application import Application
from esmongo.cli.common import ReasonOption, audit, console, fail, group, run

keys_app = group("keys", "API keys: create, list, rotate, revoke.")

DURATION = re.compile(r"^(\d+)([smhd])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, option: str) -> timedelta:
    """`90d`, `12h`, `30m`, `45s`: a positive whole number and a unit."""
    found = DURATION.match(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise fail(
            f"{option} must be a positive duration such as 90d, 12h, 30m or 45s, not {text!r}", 2
        )
    return timedelta(**{UNITS[found.group(2)]: int(found.group(1))})


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, teller, auditor or customer.")],
    user: Annotated[str, typer.Option(help="The user id the key acts as.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    expires_in: Annotated[
        str | None, typer.Option(help="Expire after this long (90d, 12h, 30m, 45s).")
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(min=0.001, help="Requests per second per service process.")
    ] = None,
    reason: ReasonOption = None,
) -> None:
    """Create an API key. It is printed once; only its hash is stored."""
    from esmongo.api import ApiKeys, Role

    try:
        chosen = Role(role)
    except ValueError:
        raise fail(f"role must be one of {', '.join(r.value for r in Role)}") from None
    lifetime = parse_duration(expires_in, "--expires-in") if expires_in else None

    async def work(application: Application) -> None:
        keys = ApiKeys(application.db)
        await keys.init()
        key = await keys.create(chosen, user, name, expires_in=lifetime, rate_limit=rate_limit)
        details = {"prefix": key[:12], "role": str(chosen), "userId": user}
        await audit(application, "ApiKeyCreated", reason, details)
        console.print(key)

    run(work)


@keys_app.command("list")
def keys_list(
    all_keys: Annotated[bool, typer.Option("--all", help="Expired and revoked ones too.")] = False,
) -> None:
    """Keys by prefix (never the keys themselves), newest first."""
    from esmongo.api import ApiKeys

    def at(value: object) -> str:
        return value.isoformat(timespec="seconds") if value is not None else "-"  # type: ignore[attr-defined]

    async def work(application: Application) -> None:
        table = Table(
            "prefix", "role", "user", "created", "expires", "revoked", "last used", "rate"
        )
        for k in await ApiKeys(application.db).list(include_unusable=all_keys):
            table.add_row(
                k.prefix,
                str(k.role),
                k.user_id,
                at(k.created_at),
                at(k.expires_at),
                at(k.revoked_at),
                at(k.last_used_at),
                f"{k.rate_limit:g}/s" if k.rate_limit is not None else "-",
            )
        console.print(table)

    run(work)


@keys_app.command("rotate")
def keys_rotate(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (esk_ and 8 characters).")],
    grace: Annotated[str, typer.Option(help="How long the old key keeps working (e.g. 1d).")],
    expires_in: Annotated[
        str | None, typer.Option(help="The new key expires after this long.")
    ] = None,
    reason: ReasonOption = None,
) -> None:
    """A new key for the same user and role; the old one expires after GRACE."""
    from esmongo.api import ApiKeys
    from esmongo.api.auth import KeyNotFound

    grace_period = parse_duration(grace, "--grace")
    lifetime = parse_duration(expires_in, "--expires-in") if expires_in else None

    async def work(application: Application) -> None:
        try:
            key = await ApiKeys(application.db).rotate(
                prefix, grace=grace_period, expires_in=lifetime
            )
        except KeyNotFound as exc:
            raise fail(str(exc)) from None
        details = {
            "prefix": prefix,
            "newPrefix": key[:12],
            "graceSeconds": int(grace_period.total_seconds()),
        }
        await audit(application, "ApiKeyRotated", reason, details)
        console.print(key)

    run(work)


@keys_app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (esk_ and 8 characters).")],
    reason: ReasonOption = None,
) -> None:
    """Refuse the key from now on, in every service process within a second."""
    from esmongo.api import ApiKeys

    async def work(application: Application) -> None:
        if not await ApiKeys(application.db).revoke(prefix):
            raise fail(f"no unrevoked API key with prefix {prefix!r}")
        await audit(application, "ApiKeyRevoked", reason, {"prefix": prefix})
        console.print(f"{prefix}: revoked")

    run(work)
