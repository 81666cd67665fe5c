"""`--repair`: what can be fixed without losing anything, each in one step that rechecks
what the check saw (the database may have moved on since)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from esmongo.codec import Document
from esmongo.ops.check.bookkeeping import TRANSIENT
from esmongo.ops.check.report import CheckReport, Finding, Fix
from esmongo.ops.check.scope import Scope
from esmongo.ops.check.streams import dedupe_fix
from esmongo.store import fence
from esmongo.store.collections import ARCHIVE, ARCHIVED_STREAMS, SNAPSHOTS
from esmongo.store.transactions import SEQUENCE_COUNTER, run_in_transaction

REPAIRS_FIELD = fence.REPAIRS
"""On the counter document: incremented by every repair transaction, so that it conflicts
with every append and archive in flight (as they increment it too)."""


class Refused(Exception):
    """The repair would not be lossless now: the reason."""


@dataclass(frozen=True)
class RepairOutcome:
    fix: Fix
    findings: tuple[Finding, ...]
    repaired: bool
    message: str

    def line(self) -> str:
        state = "repaired" if self.repaired else "refused"
        return f"{state}: {self.findings[0].problem} ({self.message})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "repaired": self.repaired,
            "message": self.message,
            "findings": [f.to_dict() for f in self.findings],
        }


async def repair(scope: Scope, report: CheckReport) -> list[RepairOutcome]:
    """Apply each distinct fix of the report once; one outcome per fix, in report order."""
    grouped: dict[str, tuple[Fix, list[Finding]]] = {}
    for finding in report.findings:
        if finding.fix is not None:
            key = f"{finding.fix.kind}:{sorted(finding.fix.args.items())!r}"
            grouped.setdefault(key, (finding.fix, []))[1].append(finding)
    outcomes = []
    for fix, findings in grouped.values():
        try:
            message = await ACTIONS[fix.kind](scope, fix.args)
            outcomes.append(RepairOutcome(fix, tuple(findings), True, message))
        except Refused as exc:
            outcomes.append(RepairOutcome(fix, tuple(findings), False, str(exc)))
    return outcomes


async def _in_transaction(
    scope: Scope,
    work: Callable[[AsyncClientSession, Document], Awaitable[str]],
    *,
    fenced: bool = True,
) -> str:
    """Run `work(session, counter)` in a transaction that takes the counter first, so that
    it conflicts with every append, archive and fence move in flight (retried like them).
    `fenced`: refused unless the write fence is open on the active collection."""

    async def body(session: AsyncClientSession) -> str:
        counter = await scope.counters.find_one_and_update(
            {"_id": SEQUENCE_COUNTER},
            {"$inc": {REPAIRS_FIELD: 1}},
            return_document=ReturnDocument.AFTER,
            session=session,
        )
        if counter is None:
            raise Refused("there is no sequence counter: run `esmongo init` first")
        if await fence.active_name(scope.db, session) != scope.active:
            raise Refused("the active collection changed since the check: check again")
        if fenced and counter.get(fence.WRITABLE, scope.active) != scope.active:
            raise Refused(f"the write fence is not open on {scope.active}: repair it first")
        return await work(session, counter)

    return await run_in_transaction(scope.db.client, body)


async def _reopen_fence(scope: Scope, args: dict[str, Any]) -> str:
    """Open the write fence on the active collection, if it is still as the check saw it.

    Lossless: esmongo_meta and the fence move together (esmongo.store.fence.open_on), so the
    active collection is where every acknowledged event went. A switch or rollback still
    running finds its fence gone and fails without switching; run it again.
    """

    async def work(session: AsyncClientSession, counter: Document) -> str:
        if counter.get(fence.WRITABLE, scope.active) != args["writable"]:
            raise Refused("the write fence moved since the check: check again")
        await scope.counters.update_one(
            {"_id": SEQUENCE_COUNTER},
            {"$set": {fence.WRITABLE: scope.active}, "$unset": {fence.SEALED_FOR: ""}},
            session=session,
        )
        return f"the write fence is open on {scope.active}"

    return await _in_transaction(scope, work, fenced=False)


async def _copy_back(scope: Scope, args: dict[str, Any]) -> str:
    """Copy an event found only in a sealed collection into the active log, at its own
    sequence, raising the counter to it if needed; refused if the sequence or the stream
    version is taken meanwhile, or the stream is archived or would have a gap."""
    sequence, source = int(args["sequence"]), str(args["collection"])
    doc = await scope.log[source].find_one({"sequence": sequence})
    if doc is None:
        raise Refused(f"#{sequence} is no longer in {source}")
    active, archive = scope.logs
    stream = {"aggregateType": doc["aggregateType"], "aggregateId": doc["aggregateId"]}
    version = int(doc["aggregateVersion"])

    async def work(session: AsyncClientSession, counter: Document) -> str:
        for collection in (active, archive):
            if await collection.find_one({"sequence": sequence}, {"_id": 1}, session=session):
                raise Refused(f"#{sequence} is in {collection.name} now: nothing to copy")
            taken = await collection.find_one(
                {**stream, "aggregateVersion": version}, {"sequence": 1}, session=session
            )
            if taken:
                raise Refused(f"version {version} is #{taken['sequence']} in {collection.name}")
        key = {"_id": {"type": doc["aggregateType"], "id": doc["aggregateId"]}}
        if await scope.log[ARCHIVED_STREAMS].find_one(key, session=session):
            raise Refused("its stream is archived: copying it would split the stream")
        if version > 1:
            before = {**stream, "aggregateVersion": version - 1}
            if not await active.find_one(before, {"_id": 1}, session=session):
                raise Refused(f"version {version - 1} of its stream is not in {active.name}")
        await active.insert_one(doc, session=session)
        if int(counter.get("value", 0)) < sequence:
            await scope.counters.update_one(
                {"_id": SEQUENCE_COUNTER}, {"$max": {"value": sequence}}, session=session
            )
        return f"#{sequence} copied from {source} into {active.name}"

    return await _in_transaction(scope, work)


async def _dedupe_stream(scope: Scope, args: dict[str, Any]) -> str:
    """Delete the active copies of a stream the archive holds whole and identical."""
    stream = (str(args["stream"][0]), str(args["stream"][1]))
    query = {"aggregateType": stream[0], "aggregateId": stream[1]}
    active = scope.logs[0]

    async def work(session: AsyncClientSession, counter: Document) -> str:
        # Compared again after taking the counter: no append or archive can move it now.
        fix, reason = await dedupe_fix(scope, stream)
        if fix is None:
            raise Refused(reason)
        held = await active.count_documents(query, session=session)
        deleted = await active.delete_many(query, session=session)
        if deleted.deleted_count != held:
            raise Refused(f"found {held} active copies but deleted {deleted.deleted_count}")
        return f"deleted {held} copies from {active.name}; {ARCHIVE} keeps the stream"

    return await _in_transaction(scope, work)


async def _raise_counter(scope: Scope, args: dict[str, Any]) -> str:
    head = await scope.highest(int(args["head"]))
    await scope.counters.update_one(
        {"_id": SEQUENCE_COUNTER},
        {"$max": {"value": head}, "$setOnInsert": fence.incarnation()},
        upsert=True,
    )
    return f"the counter is at least #{head}"


async def _release_claim(scope: Scope, args: dict[str, Any]) -> str:
    result = await scope.db[str(args["collection"])].delete_one(
        {"_id": args["key"], "status": {"$type": "null"}, "createdAt": args["createdAt"]}
    )
    if result.deleted_count == 0:
        raise Refused("the claim was completed or released meanwhile")
    return "claim deleted"


async def _forget_response(scope: Scope, args: dict[str, Any]) -> str:
    records = scope.db[str(args["collection"])]
    result = await records.delete_one({"_id": args["key"], **TRANSIENT})
    if result.deleted_count == 0:
        raise Refused("the stored response changed meanwhile")
    return "stored conflict deleted"


async def _delete_snapshot(scope: Scope, args: dict[str, Any]) -> str:
    kind, ident = args["stream"]
    version = int(args["version"])
    result = await scope.db[SNAPSHOTS].delete_one(
        {"aggregateType": kind, "aggregateId": ident, "version": version}
    )
    if result.deleted_count == 0:
        raise Refused("the snapshot changed meanwhile")
    return "snapshot deleted"


ACTIONS: dict[str, Callable[[Scope, dict[str, Any]], Awaitable[str]]] = {
    "copy_back": _copy_back,
    "dedupe_stream": _dedupe_stream,
    "raise_counter": _raise_counter,
    "release_claim": _release_claim,
    "delete_snapshot": _delete_snapshot,
    "reopen_fence": _reopen_fence,
    "forget_response": _forget_response,
}
