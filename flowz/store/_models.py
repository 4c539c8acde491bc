"""The schema, as SQLModel tables: a new database is created from these models.

Imported only when a schema is created or upgraded (`_migrate`), never at `import flowz`.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, MetaData, Text, text
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlmodel import Field, SQLModel

__all__ = ["schema_statements"]

_metadata = MetaData()


class _Base(SQLModel):
    metadata = _metadata


class FlowzExecution(_Base, table=True):
    """A workflow run or a child execution (step or workflow)."""

    __tablename__ = "flowz_executions"
    __table_args__ = (
        # Since v8, priority descending: the claim's order (priority DESC, run_at) is
        # read off the index. Ascending, every claim sorted all pending rows.
        Index(
            "ix_flowz_executions_claim",
            "queue",
            text("priority DESC"),
            "run_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # Partial since v7: top-level runs are not in it, so statistics (ANALYZE) see how
        # few rows a parent has, and the planner keeps using it for children.
        Index(
            "ix_flowz_executions_parent",
            "parent_id",
            "position",
            "child_index",
            sqlite_where=text("parent_id IS NOT NULL"),
            postgresql_where=text("parent_id IS NOT NULL"),
        ),
        Index("ix_flowz_executions_root", "root_id"),
        # Since v2, with id since v5: top-level runs, newest first (list_runs pages).
        Index(
            "ix_flowz_executions_runs",
            "created_at",
            "id",
            sqlite_where=text("parent_id IS NULL"),
            postgresql_where=text("parent_id IS NULL"),
        ),
        # Since v5: list_runs by status (and prune), by name.
        Index(
            "ix_flowz_executions_runs_status",
            "status",
            "created_at",
            "id",
            sqlite_where=text("parent_id IS NULL"),
            postgresql_where=text("parent_id IS NULL"),
        ),
        Index(
            "ix_flowz_executions_runs_name",
            "name",
            "created_at",
            "id",
            sqlite_where=text("parent_id IS NULL"),
            postgresql_where=text("parent_id IS NULL"),
        ),
        # Since v4: executions with a deadline, for the workers' look for expired ones.
        Index(
            "ix_flowz_executions_deadline",
            "deadline",
            sqlite_where=text("deadline IS NOT NULL"),
            postgresql_where=text("deadline IS NOT NULL"),
        ),
        # Since v6: what runs in a queue (and per partition), for the claims' limits.
        Index(
            "ix_flowz_executions_running",
            "queue",
            "partition_key",
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        Index(
            "ix_flowz_executions_lease",
            "lease_expires_at",
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
    )

    id: str = Field(primary_key=True)
    root_id: str
    parent_id: str | None = None
    position: int | None = None
    child_index: int | None = None
    kind: str
    name: str
    input: str = Field(sa_column=Column(Text, nullable=False))
    output: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    status: str
    attempt: int = 0
    max_attempts: int = 1
    run_at: float
    queue: str
    priority: int = 0
    claim_token: str | None = None
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    #: The journal position the execution waits at, and how many children it still waits for.
    wait_position: int | None = None
    wait_count: int = 0
    #: For a child: the parent's wait_position while the parent waits for it.
    awaited_at: int | None = None
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    #: Since v4: when a workflow run fails with RunTimeoutError (epoch seconds).
    deadline: float | None = None
    #: Since v6: the key a queue's per_partition limit counts by (a tenant, a user).
    partition_key: str | None = None
    #: Since v7: the W3C trace context (JSON) of whoever started it, for OpenTelemetry.
    trace_context: str | None = None


class FlowzJournal(_Base, table=True):
    """One durable call of a workflow execution."""

    __tablename__ = "flowz_journal"

    execution_id: str = Field(primary_key=True)
    position: int = Field(primary_key=True)
    kind: str
    name: str
    status: str
    output: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    attempt: int = 1
    started_at: float | None = None
    finished_at: float | None = None


class FlowzWorker(_Base, table=True):
    """A live worker process."""

    __tablename__ = "flowz_workers"

    id: str = Field(primary_key=True)
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    queue: str = Field(default="default", sa_column_kwargs={"server_default": "default"})
    #: The journal names it runs, a JSON list.
    names: str = Field(default="[]", sa_column_kwargs={"server_default": "[]"})


class FlowzMessage(_Base, table=True):
    """A message sent to a workflow execution, in send order (since v4)."""

    __tablename__ = "flowz_messages"
    __table_args__ = (
        Index("ux_flowz_messages_key", "run_id", "idempotency_key", unique=True),
        Index(
            "ix_flowz_messages_unread",
            "run_id",
            "topic",
            "seq",
            sqlite_where=text("consumed_at IS NULL"),
            postgresql_where=text("consumed_at IS NULL"),
        ),
    )

    run_id: str = Field(primary_key=True)
    #: 1, 2, 3... per execution: sends take the execution's row lock, so seq is send order.
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    topic: str
    value: str = Field(sa_column=Column(Text, nullable=False))
    idempotency_key: str | None = None
    created_at: float
    consumed_at: float | None = None


class FlowzEvent(_Base, table=True):
    """The latest value of an event key of a workflow execution (since v4)."""

    __tablename__ = "flowz_events"

    run_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)  #: the event's key
    value: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: float


class FlowzStream(_Base, table=True):
    """One value written to a stream of a workflow execution, in order (since v4)."""

    __tablename__ = "flowz_streams"

    run_id: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    value: str = Field(sa_column=Column(Text, nullable=False))
    #: 1 on the row that closes the stream (its value is null).
    closed: int = 0
    created_at: float


class FlowzQueue(_Base, table=True):
    """A queue's limits, as its latest worker or client defined them (since v6)."""

    __tablename__ = "flowz_queues"

    name: str = Field(primary_key=True)
    concurrency: int | None = None
    per_worker: int | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    per_partition: int | None = None
    updated_at: float


class FlowzQueueStart(_Base, table=True):
    """A start of an execution of a rate-limited queue, kept for one rate period (since v6)."""

    __tablename__ = "flowz_queue_starts"

    queue: str = Field(primary_key=True)
    at: float = Field(primary_key=True)
    execution_id: str = Field(primary_key=True)


class FlowzSchedule(_Base, table=True):
    """A workflow's cron schedule and the last tick a run was made for (since v6)."""

    __tablename__ = "flowz_schedules"

    name: str = Field(primary_key=True)  #: the workflow's journal name
    cron: str
    timezone: str
    catch_up: str
    paused: int = 0
    #: The last tick handled (run made, or skipped): epoch seconds.
    last_tick: float | None = None
    updated_at: float


class FlowzSchema(_Base, table=True):
    """The schema versions applied to this database (one row each; the highest is current)."""

    __tablename__ = "flowz_schema"

    version: int = Field(primary_key=True)


def schema_statements(dialect: Dialect) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements (idempotent) for the current schema."""
    statements: list[str] = []
    for table in _metadata.sorted_tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        statements.extend(
            str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda i: str(i.name))
        )
    return statements
