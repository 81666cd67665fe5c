"""A command listener for tests of how many queries a read or write path costs."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pymongo import monitoring
from pymongo.asynchronous.database import AsyncDatabase


class FindCounter(monitoring.CommandListener):
    """Names the read commands a client sends: for tests of how many queries a path costs."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.filters: list[object] = []
        """The `filter` of each find, in order."""
        self.sent: list[dict[str, Any]] = []
        """Each find and aggregate command as sent, in order (to explain them again)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("find", "getMore", "aggregate", "distinct"):
            self.commands.append(event.command_name)
            if event.command_name == "find":
                self.filters.append(event.command.get("filter"))
            if event.command_name in ("find", "aggregate"):
                self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


EXPLAINED = ("find", "filter", "projection", "sort", "limit", "aggregate", "pipeline", "cursor")
"""The parts of a sent find or aggregate that say what it reads."""


def docs_examined(explained: Any) -> int | None:
    """The documents one command examined, from its explain: the top-level
    `executionStats`, else the first one found (an aggregation's `$cursor` stage)."""
    if isinstance(explained, dict):
        if "executionStats" in explained:
            return int(explained["executionStats"]["totalDocsExamined"])
        values: Any = explained.values()
    elif isinstance(explained, list):
        values = explained
    else:
        return None
    for value in values:
        found = docs_examined(value)
        if found is not None:
            return found
    return None


async def examined(
    db: AsyncDatabase[Any], sent: list[dict[str, Any]], names: Collection[str]
) -> int:
    """The documents the finds and aggregates `sent` to collections `names` of `db` examine,
    each explained again (executionStats)."""
    total = 0
    for command in sent:
        if (command.get("find") or command.get("aggregate")) in names:
            explain = {k: v for k, v in command.items() if k in EXPLAINED}
            found = docs_examined(await db.command("explain", explain, verbosity="executionStats"))
            assert found is not None, command
            total += found
    return total
