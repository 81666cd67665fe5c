"""Errors of the projection machinery, all under EsmongoError."""

from __future__ import annotations

from esmongo.errors import EsmongoError


class ProjectionError(EsmongoError):
    """Base of projection errors."""


class CheckpointConflict(ProjectionError):
    """The checkpoint is not where this runner left it, or carries a newer fence.

    The transaction that met it was aborted: nothing it wrote is visible.
    """

    def __init__(self, projection: str, fence: int, expected: int) -> None:
        self.projection = projection
        self.fence = fence
        self.expected = expected
        super().__init__(
            f"checkpoint of {projection} moved or was fenced (this runner: fence {fence}, "
            f"position {expected}); the batch was abandoned"
        )


class LeaseLost(ProjectionError):
    """Another process holds (or took over) the projection's lease."""


class CommitInterrupted(ProjectionError):
    """The shared transaction holding this runner's batch was interrupted (its leader was
    cancelled): whether it committed is known only from the checkpoint, read again."""


class ProjectionBlocked(ProjectionError):
    """A STOP-policy projection stopped before a dead letter; retry or discard it."""


class DeadLetterError(ProjectionError):
    """A dead letter could not be retried or discarded as asked."""


class RebuildError(ProjectionError):
    """A blue/green rebuild could not start, build or swap."""
