"""Stored migrations that never lose an original event (see docs/adr/0004).

Upcasters are the first answer to a new event version: nothing is rewritten. When old
versions must go from storage too, a migration copies every event, in sequence order,
into a NEW events collection, transforming the ones it targets; it verifies the copy
against the source and only then switches the application over. The source stays,
sealed read-only, for audit and rollback. One module per step, `Migrator` over them:

- `plan`: the steps (`Migration`), how they chain, and `dry_run` (transforms, writes nothing).
- `copy`: `run(target)` copies in batches and resumes after the target's highest sequence.
- `verify`: `verify_copy` compares both collections in one merge pass.
- `switch`: seals the source behind the write fence, catches up, verifies, and records the
  new active collection in `esmongo_meta`; `rollback_switch(db)` goes back while lossless.
- `active`: which collection is live (`active_events_collection`).
"""

from esmongo.ops.migration.active import active_events_collection, max_sequence
from esmongo.ops.migration.copy import FAILURES, RunReport
from esmongo.ops.migration.errors import MigrationError
from esmongo.ops.migration.migrator import Migrator
from esmongo.ops.migration.plan import (
    MAX_LISTED,
    Change,
    DryRunReport,
    EventRef,
    Failure,
    Migration,
    MigrationPlan,
    Planned,
    Progress,
    Sample,
    Transform,
)
from esmongo.ops.migration.switch import (
    PAUSE_POINTS,
    ROLLBACK,
    SEALED,
    record_switch,
    rollback_switch,
    seal,
    switch_reason,
    unseal,
)
from esmongo.ops.migration.verify import IDENTITY, VerifyReport, verify_copy

__all__ = [
    "FAILURES",
    "IDENTITY",
    "MAX_LISTED",
    "PAUSE_POINTS",
    "ROLLBACK",
    "SEALED",
    "Change",
    "DryRunReport",
    "EventRef",
    "Failure",
    "Migration",
    "MigrationError",
    "MigrationPlan",
    "Migrator",
    "Planned",
    "Progress",
    "RunReport",
    "Sample",
    "Transform",
    "VerifyReport",
    "active_events_collection",
    "max_sequence",
    "record_switch",
    "rollback_switch",
    "seal",
    "switch_reason",
    "unseal",
    "verify_copy",
]
