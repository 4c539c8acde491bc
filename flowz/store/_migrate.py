"""Schema migrations: a new database gets the current schema, an older one the missing steps.

A migration is numbered and written for both dialects. Stores run the plan in one
transaction under their migration lock (PostgreSQL: an advisory lock; SQLite: the
write lock) and record each version they apply in flowz_schema in it, so a step
that was interrupted left nothing behind and runs again whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._sql import SCHEMA_VERSION, check_schema_version

__all__ = ["MIGRATIONS", "Migration", "plan"]


@dataclass(frozen=True, slots=True)
class Migration:
    """The step from schema `version - 1` to `version`."""

    version: int
    description: str
    #: Statements valid on both SQLite and PostgreSQL.
    statements: tuple[str, ...]


#: Every step after v1 (the schema of flowz 0.1), in order.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "index ix_flowz_executions_runs: list top-level runs newest first without a scan",
        (
            "CREATE INDEX IF NOT EXISTS ix_flowz_executions_runs "
            "ON flowz_executions (created_at) WHERE parent_id IS NULL",
        ),
    ),
    Migration(
        3,
        "flowz_workers.queue and .names: say which worker could take a waiting run",
        (
            "ALTER TABLE flowz_workers ADD COLUMN queue VARCHAR NOT NULL DEFAULT 'default'",
            "ALTER TABLE flowz_workers ADD COLUMN names VARCHAR NOT NULL DEFAULT '[]'",
        ),
    ),
    Migration(
        4,
        "flowz_messages, flowz_events and flowz_streams: talk to running workflows; "
        "flowz_executions.deadline",
        (
            "ALTER TABLE flowz_executions ADD COLUMN deadline FLOAT",
            "CREATE INDEX ix_flowz_executions_deadline ON flowz_executions (deadline) "
            "WHERE deadline IS NOT NULL",
            "CREATE TABLE flowz_messages (run_id VARCHAR NOT NULL, seq INTEGER NOT NULL, "
            "topic VARCHAR NOT NULL, value TEXT NOT NULL, idempotency_key VARCHAR, "
            "created_at FLOAT NOT NULL, consumed_at FLOAT, PRIMARY KEY (run_id, seq))",
            "CREATE UNIQUE INDEX ux_flowz_messages_key ON flowz_messages (run_id, idempotency_key)",
            "CREATE INDEX ix_flowz_messages_unread ON flowz_messages (run_id, topic, seq) "
            "WHERE consumed_at IS NULL",
            "CREATE TABLE flowz_events (run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, "
            "value TEXT NOT NULL, updated_at FLOAT NOT NULL, PRIMARY KEY (run_id, name))",
            "CREATE TABLE flowz_streams (run_id VARCHAR NOT NULL, name VARCHAR NOT NULL, "
            "seq INTEGER NOT NULL, value TEXT NOT NULL, closed INTEGER NOT NULL DEFAULT 0, "
            "created_at FLOAT NOT NULL, PRIMARY KEY (run_id, name, seq))",
        ),
    ),
    Migration(
        5,
        "indexes for list_runs pages (newest first, by status, by name) and for prune",
        (
            "DROP INDEX IF EXISTS ix_flowz_executions_runs",
            "CREATE INDEX ix_flowz_executions_runs ON flowz_executions (created_at, id) "
            "WHERE parent_id IS NULL",
            "CREATE INDEX ix_flowz_executions_runs_status "
            "ON flowz_executions (status, created_at, id) WHERE parent_id IS NULL",
            "CREATE INDEX ix_flowz_executions_runs_name "
            "ON flowz_executions (name, created_at, id) WHERE parent_id IS NULL",
        ),
    ),
    Migration(
        6,
        "queues with fleet-wide limits (flowz_queues, flowz_queue_starts, "
        "flowz_executions.partition_key) and cron schedules (flowz_schedules)",
        (
            "ALTER TABLE flowz_executions ADD COLUMN partition_key VARCHAR",
            "CREATE INDEX ix_flowz_executions_running ON flowz_executions "
            "(queue, partition_key) WHERE status = 'running'",
            "CREATE TABLE flowz_queues (name VARCHAR NOT NULL, concurrency INTEGER, "
            "per_worker INTEGER, rate_limit INTEGER, rate_period FLOAT, per_partition INTEGER, "
            "updated_at FLOAT NOT NULL, PRIMARY KEY (name))",
            "CREATE TABLE flowz_queue_starts (queue VARCHAR NOT NULL, at FLOAT NOT NULL, "
            "execution_id VARCHAR NOT NULL, PRIMARY KEY (queue, at, execution_id))",
            "CREATE TABLE flowz_schedules (name VARCHAR NOT NULL, cron VARCHAR NOT NULL, "
            "timezone VARCHAR NOT NULL, catch_up VARCHAR NOT NULL, paused INTEGER NOT NULL, "
            "last_tick FLOAT, updated_at FLOAT NOT NULL, PRIMARY KEY (name))",
        ),
    ),
    Migration(
        7,
        "flowz_executions.trace_context: one OpenTelemetry trace from the caller of start() "
        "to every child, across processes; ix_flowz_executions_parent without top-level runs",
        (
            "ALTER TABLE flowz_executions ADD COLUMN trace_context VARCHAR",
            # With top-level runs in it, statistics made SQLite scan the table for children.
            "DROP INDEX IF EXISTS ix_flowz_executions_parent",
            "CREATE INDEX ix_flowz_executions_parent ON flowz_executions "
            "(parent_id, position, child_index) WHERE parent_id IS NOT NULL",
        ),
    ),
    Migration(
        8,
        "ix_flowz_executions_claim in the claim's order (priority descending): a claim no "
        "longer sorts every pending execution",
        (
            "DROP INDEX IF EXISTS ix_flowz_executions_claim",
            "CREATE INDEX ix_flowz_executions_claim ON flowz_executions "
            "(queue, priority DESC, run_at) WHERE status = 'pending'",
        ),
    ),
)
assert MIGRATIONS[-1].version == SCHEMA_VERSION, "add a migration with every schema change"


def plan(found: int | None, dialect: str, where: str) -> list[Migration]:
    """The steps that bring a database at schema `found` (None: empty) to SCHEMA_VERSION.

    A newer schema is refused: migrations never go down.
    """
    if found is not None and found > SCHEMA_VERSION:
        check_schema_version(found, where)
    if found is None:
        from sqlalchemy.dialects import postgresql, sqlite  # only here: a new database

        from ._models import schema_statements

        rendering = (
            postgresql.dialect()  # type: ignore[no-untyped-call]
            if dialect == "postgresql"
            else sqlite.dialect()
        )
        statements = tuple(schema_statements(rendering))
        return [Migration(SCHEMA_VERSION, f"created the schema (v{SCHEMA_VERSION})", statements)]
    return [m for m in MIGRATIONS if m.version > found]
