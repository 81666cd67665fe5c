"""Projections: read models kept up to date from the events, exactly once.

Define a `Projection` (name, collections with indexes, `@handles` methods returning
`Update`/`Insert`/`Delete` writes), run it with `ProjectionDaemon` / `run_projections`,
tuned by `RunnerOptions` (or `python -m esmongo.projections.worker`), watch it with
`projection_status`, repair it with `DeadLetters`, `rebuild` (blue/green) or `replay` (in
place). See docs/projections.md.
"""

from esmongo.projections.batch_pipeline import RunnerState
from esmongo.projections.checkpoints import Checkpoint, Checkpoints
from esmongo.projections.daemon import ProjectionDaemon, run_projections
from esmongo.projections.dead_letters import DeadLetter, DeadLetters
from esmongo.projections.errors import (
    CheckpointConflict,
    DeadLetterError,
    LeaseLost,
    ProjectionBlocked,
    ProjectionError,
    RebuildError,
)
from esmongo.projections.leases import Leases, LeaseState
from esmongo.projections.options import BatchReport, RunnerOptions
from esmongo.projections.projection import FailurePolicy, Lifecycle, Projection, handles
from esmongo.projections.rebuild import RebuildResult, rebuild, replay, reset
from esmongo.projections.runner import ProjectionRunner
from esmongo.projections.status import ProjectionStatus, projection_status
from esmongo.projections.watcher import EventWatcher
from esmongo.projections.writes import Delete, Insert, Update, Write, WritePlan

__all__ = [
    "BatchReport",
    "Checkpoint",
    "CheckpointConflict",
    "Checkpoints",
    "DeadLetter",
    "DeadLetterError",
    "DeadLetters",
    "Delete",
    "EventWatcher",
    "FailurePolicy",
    "Insert",
    "LeaseLost",
    "LeaseState",
    "Leases",
    "Lifecycle",
    "Projection",
    "ProjectionBlocked",
    "ProjectionDaemon",
    "ProjectionError",
    "ProjectionRunner",
    "ProjectionStatus",
    "RebuildError",
    "RebuildResult",
    "RunnerOptions",
    "RunnerState",
    "Update",
    "Write",
    "WritePlan",
    "handles",
    "projection_status",
    "rebuild",
    "replay",
    "reset",
    "run_projections",
]
