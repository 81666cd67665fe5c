"""Commands for the event type catalog and for migrations of stored events."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.syntax import Syntax
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
from esmongo.errors import SchemaError
from esmongo.ops.migration import Migration, Migrator, active_events_collection, rollback_switch
from esmongo.ops.schema_check import stored_schemas, sync, unreachable_versions
from esmongo.schema.registry import EventSchema, Upcasters

schemas_app = group("schemas", "The event type catalog: JSON Schemas per type and version.")
migrate_app = group("migrate", "Copy-transform events into a new collection; originals kept.")

MigrationsOption = Annotated[
    str,
    typer.Option(
        "--migrations", help="module:NAME of a list of esmongo.ops.migration.Migration to apply."
    ),
]
TargetOption = Annotated[str, typer.Option("--target", help="The new events collection.")]


def load_object(spec: str) -> Any:
    """`package.module:NAME` -> that object (migrations and upcasters live in code)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise fail(f"expected module:NAME, not {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise fail(f"cannot load {spec}: {exc}") from exc


def _migrations(spec: str) -> list[Migration]:
    found = load_object(spec)
    if not isinstance(found, list | tuple) or not all(isinstance(m, Migration) for m in found):
        raise fail(f"{spec} is not a list of esmongo.ops.migration.Migration")
    return list(found)


@schemas_app.command("list")
def schemas_list(
    event_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
) -> None:
    """The registered schemas, by type and version."""

    async def work(application: Application) -> None:
        table = Table("type", "version", "previous", "deprecated", "projections", "description")
        for s in await stored_schemas(application.catalog, event_type):
            table.add_row(
                s.event_type,
                s.version,
                s.previous_version or "",
                s.deprecated_at.date().isoformat() if s.deprecated_at else "",
                ", ".join(s.projections),
                s.description,
            )
        console.print(table)

    run(work)


@schemas_app.command("show")
def schemas_show(
    event_type: Annotated[str, typer.Argument(help="Event type.")],
    version: Annotated[str | None, typer.Argument(help="Default: every version.")] = None,
) -> None:
    """The JSON Schema of an event type (one version, or all)."""

    async def work(application: Application) -> None:
        found = [
            s
            for s in await stored_schemas(application.catalog, event_type)
            if version is None or s.version == version
        ]
        if not found:
            raise fail(f"no schema for {event_type}" + (f" v{version}" if version else ""))
        for s in found:
            console.rule(f"{s.event_type} v{s.version}")
            console.print(Syntax(json.dumps(s.schema, indent=2, default=str), "json"))

    run(work)


@schemas_app.command("register")
def schemas_register(
    file: Annotated[Path, typer.Argument(help="JSON: eventType, version, schema, ...")],
) -> None:
    """Register one schema from a JSON file; a (type, version) already registered with
    another JSON Schema is refused (register a new version and an upcaster instead)."""
    try:
        doc = json.loads(file.read_text())
        schema = EventSchema.from_document(doc)
    except (OSError, ValueError, KeyError) as exc:
        raise fail(f"{file}: not a schema document ({exc})") from exc

    async def work(application: Application) -> None:
        try:
            new = await application.catalog.register(schema)
        except SchemaError as exc:
            raise fail(str(exc)) from exc
        state = "registered" if new else "already registered, unchanged"
        console.print(f"{schema.event_type} v{schema.version}: {state}")

    run(work)


@schemas_app.command("deprecate")
def schemas_deprecate(
    event_type: Annotated[str, typer.Argument()], version: Annotated[str, typer.Argument()]
) -> None:
    """Mark a version deprecated (events of it are still read and upcast)."""

    async def work(application: Application) -> None:
        await application.catalog.deprecate(event_type, version)
        console.print(f"{event_type} v{version}: deprecated")

    run(work)


@schemas_app.command("sync")
def schemas_sync(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report only.")] = False,
) -> None:
    """Write the schemas declared in code to the catalog and report drift (exit 1 on drift)."""

    async def work(application: Application) -> None:
        report = await sync(application.catalog, application.schemas, dry_run=dry_run)
        verb = "would register" if dry_run else "registered"
        for s in report.added:
            console.print(f"{verb} {s.event_type} v{s.version}")
        for s in report.updated:
            console.print(f"updated the description of {s.event_type} v{s.version}")
        for d in report.drift:
            err.print(f"[yellow]drift:[/] {d}")
        console.print(f"{len(report.unchanged)} unchanged, {len(report.drift)} drifting")
        if report.drift:
            raise fail("the catalog differs from the code")

    run(work, init=False)


@schemas_app.command("check")
def schemas_check(
    upcasters: Annotated[
        str | None,
        typer.Option(
            help="module:NAME of an Upcasters chain to check instead of the application's."
        ),
    ] = None,
) -> None:
    """Every (type, version) in the store must upcast to its latest version (exit 1 if not)."""
    chain: Upcasters | None = None
    if upcasters is not None:
        found = load_object(upcasters)
        if not isinstance(found, Upcasters):
            raise fail(f"{upcasters} is not an esmongo.Upcasters")
        chain = found

    async def work(application: Application) -> None:
        problems = await unreachable_versions(application.store, upcasters=chain)
        for problem in problems:
            err.print(f"[red]unreachable:[/] {problem}")
        if problems:
            raise fail(f"{len(problems)} stored version(s) cannot reach their latest schema")
        console.print("every stored event version upcasts to its latest schema")

    run(work)


@migrate_app.command("dry-run")
def migrate_dry_run(migrations: MigrationsOption) -> None:
    """What a migration would change, with samples, without writing anything."""

    async def work(application: Application) -> None:
        migrator = Migrator(application.db, _migrations(migrations), registry=application.registry)
        with progress_bars() as advance:
            report = await migrator.dry_run(
                progress=lambda done, total: advance("scan", done, total)
            )
        table = Table("type", "from", "to", "events")
        for change in report.changes:
            table.add_row(
                change.event_type, change.from_version, change.to_version, str(change.count)
            )
        console.print(table)
        console.print(f"{report.would_change} of {report.total} events would change")
        for f in report.failures:
            err.print(f"[red]would fail:[/] {f}")
        if report.failure_count:
            raise fail(f"{report.failure_count} event(s) would fail: fix the transform first")

    run(work)


@migrate_app.command("run")
def migrate_run(
    migrations: MigrationsOption, target: TargetOption, reason: ReasonOption = None
) -> None:
    """Copy every event into TARGET, transformed; resumes where an interrupted run stopped."""

    async def work(application: Application) -> None:
        migrator = Migrator(application.db, _migrations(migrations), registry=application.registry)
        with progress_bars() as advance:
            report = await migrator.run(
                target, progress=lambda done, total: advance(target, done, total)
            )
        resumed = f" (resumed after #{report.resumed_after})" if report.resumed_after else ""
        console.print(
            f"copied {report.copied} events into {target}{resumed}, {report.transformed} "
            f"transformed, {report.rate:,.0f} events/s"
        )
        for f in report.failures:
            err.print(f"[red]failed:[/] {f}")
        details = {"target": target, "copied": report.copied, "complete": report.complete}
        await audit(application, "MigrationRun", reason, details)
        if not report.complete:
            raise fail(f"{report.failure_count} failure(s): fix them and run again; no switch")

    run(work)


@migrate_app.command("verify")
def migrate_verify(migrations: MigrationsOption, target: TargetOption) -> None:
    """Compare TARGET with the active collection: counts, order, versions, checksum."""

    async def work(application: Application) -> None:
        migrator = Migrator(application.db, _migrations(migrations), registry=application.registry)
        with progress_bars() as advance:
            report = await migrator.verify(
                target, progress=lambda done, total: advance("verify", done, total)
            )
        for problem in report.problems:
            err.print(f"[red]problem:[/] {problem}")
        if not report.ok:
            raise fail("verification failed: do not switch")
        console.print(f"{target} verified: {report}")

    run(work)


@migrate_app.command("switch")
def migrate_switch(
    migrations: MigrationsOption,
    target: TargetOption,
    tail_only: Annotated[
        bool, typer.Option(help="After a passed verify, compare only what came since.")
    ] = False,
    reason: ReasonOption = None,
) -> None:
    """Make TARGET the active events collection; the old one is sealed and kept for audit."""

    async def work(application: Application) -> None:
        migrator = Migrator(application.db, _migrations(migrations), registry=application.registry)
        report = await migrator.switch(target, tail_only=tail_only)
        await application.init()  # the store on the collection now active: the old is sealed
        await audit(application, "MigrationSwitched", reason, {"target": target})
        console.print(f"switched to {target}: {report}. Restart the processes using the store.")

    run(work)


@migrate_app.command("rollback")
def migrate_rollback(reason: ReasonOption = None) -> None:
    """Make the previous events collection active again (only while nothing was appended)."""

    async def work(application: Application) -> None:
        previous = await rollback_switch(application.db)
        await application.init()  # the store on the collection now active again
        await audit(application, "MigrationRolledBack", reason, {"active": previous})
        console.print(f"active events collection: {previous}. Restart the processes.")

    run(work)


@migrate_app.command("status")
def migrate_status() -> None:
    """Which events collection is active."""

    async def work(application: Application) -> None:
        console.print(f"active events collection: {await active_events_collection(application.db)}")

    run(work)
