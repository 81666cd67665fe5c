"""Prometheus metrics: the seed's table ("Métriques de performance").

Names follow Prometheus conventions; docs/operations.md maps them to the seed's names,
targets and alert thresholds. The service (`esmongo[service]`) brings prometheus-client and
serves them; without it (a core install) the same instruments record nothing.
"""

from __future__ import annotations

try:
    from prometheus_client import Counter, Gauge, Histogram
except ImportError:  # a core install: nothing serves the metrics, so nothing records them
    from esmongo._no_metrics import Counter, Gauge, Histogram  # type: ignore[assignment]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)

APPEND_LATENCY = Histogram(
    "esmongo_events_append_latency_seconds",
    "Time to append one batch of events (events.append.latency; p99 target 50 ms).",
    buckets=LATENCY_BUCKETS,
)
EVENTS_APPENDED = Counter("esmongo_events_appended_total", "Events appended.")
REPLAY_DURATION = Histogram(
    "esmongo_events_replay_duration_seconds",
    "Time to load an aggregate: snapshot plus newer events (events.replay.duration).",
    ["aggregate_type"],
    buckets=LATENCY_BUCKETS,
)
SNAPSHOT_DURATION = Histogram(
    "esmongo_snapshots_creation_duration_seconds",
    "Time to write one snapshot (snapshots.creation.duration).",
    ["aggregate_type"],
    buckets=LATENCY_BUCKETS,
)
SNAPSHOT_LOADS = Counter(
    "esmongo_snapshots_loads_total",
    "Aggregate loads by whether a usable snapshot was found (snapshots.hit_rate = hit/all).",
    ["aggregate_type", "result"],
)
CACHE_TRUSTED = Counter(
    "esmongo_aggregate_cache_trusted_total",
    "Optimistic loads answered by the aggregate cache with no read (esmongo.model.cache).",
    ["aggregate_type"],
)
PROJECTION_LAG_EVENTS = Gauge(
    "esmongo_projections_lag_events",
    "Head sequence minus the projection's checkpoint.",
    ["projection"],
)
PROJECTION_LAG_SECONDS = Gauge(
    "esmongo_projections_lag_seconds",
    "Age of the newest event the projection has not yet applied (projections.lag).",
    ["projection"],
)
PROJECTION_EVENTS = Counter(
    "esmongo_projections_events_total",
    "Events applied by projections (rate = projections.throughput).",
    ["projection"],
)
PROJECTION_BATCH_DURATION = Histogram(
    "esmongo_projections_batch_duration_seconds",
    "Time to read, apply and commit one projection batch.",
    ["projection"],
    buckets=LATENCY_BUCKETS,
)
PROJECTION_EVENT_LATENCY = Histogram(
    "esmongo_projections_event_latency_seconds",
    "From an event's append to its read-model commit, for runners that are live.",
    ["projection"],
    buckets=LATENCY_BUCKETS,
)
PROJECTION_DEAD_LETTERS = Gauge(
    "esmongo_projections_dead_letters",
    "Dead letters waiting for a retry or a discard.",
    ["projection"],
)
PROJECTION_LEASE_HELD = Gauge(
    "esmongo_projections_lease_held",
    "1 when this process holds the projection's lease (is its active runner), else 0.",
    ["projection"],
)
COMMAND_CONFLICTS_RETRIED = Counter(
    "esmongo_commands_conflicts_retried_total",
    "Commands decided again after a version conflict (another writer changed the aggregate).",
    ["command"],
)
COMMAND_CONFLICTS_EXHAUSTED = Counter(
    "esmongo_commands_conflicts_exhausted_total",
    "Commands that still conflicted after their last attempt (answered as a conflict).",
    ["command"],
)
STORE_TRANSACTION_RETRIES = Counter(
    "esmongo_store_transaction_retries_total",
    "Append transactions run again after a transient failure (a write conflict on the counter).",
)
STORE_TRANSACTIONS = Counter(
    "esmongo_store_transactions_total",
    "Append transactions committed: one per group-commit batch, so appends over this is the "
    "batch size.",
)
STORE_APPENDS = Counter(
    "esmongo_store_appends_total",
    "Appends committed (one call of append or append_streams, one or more events).",
)
STORE_APPENDS_TAKEN_OUT = Counter(
    "esmongo_store_appends_taken_out_total",
    "Appends taken out of a group-commit batch by an error of their own (a version conflict, "
    "a duplicate event id, a failing unit-of-work write); the rest of the batch commits.",
)
