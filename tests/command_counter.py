"""A command listener for tests of how many queries a read or write path costs."""

from __future__ import annotations

from typing import Any

from pymongo import monitoring


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
