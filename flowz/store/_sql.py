"""Store policy, written once: columns, rows, SQL fragments, the change signal, the schema check.

Both stores build their statements from these pieces, so what they select, how
they give a lease up, in which order they claim and which schema versions they
accept cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import anyio

from .._serde import dumps, loads
from .._types import JSON, TERMINAL_STATUSES
from ..errors import RunEndedError, RunNotFoundError, SchemaVersionError, UsageError
from ._protocol import (
    ChildOutcome,
    ExecutionRow,
    JournalEntry,
    NewExecution,
    QueueLimits,
    RunQuery,
    WorkerRow,
)

__all__ = [
    "CHILD_OUTCOME_COLUMNS",
    "CLAIM_ORDER",
    "EVENT_UPSERT",
    "EXPIRED",
    "child_outcome",
    "child_outcomes_sql",
    "EXECUTION_COLUMNS",
    "JOURNAL_COLUMNS",
    "JOURNAL_SELECT",
    "LEASE_CLEARED",
    "MESSAGE_INSERT",
    "STREAM_APPEND",
    "STREAM_READ",
    "NEXT_MESSAGE",
    "SCHEMA_VERSION",
    "TERMINAL_SQL",
    "WAKE_RECEIVER",
    "WORKER_SELECT",
    "ChangeSignal",
    "cancel_descendants_sql",
    "check_fork_source",
    "check_new_runs",
    "check_message_target",
    "check_schema_version",
    "dumps_or_none",
    "CLAIMED",
    "RUNNING_BY_WORKER",
    "run_counts_sql",
    "pending_unknown_sql",
    "QUEUES_DEFINED",
    "QUEUES_IN_USE",
    "QUEUE_COLUMNS",
    "QUEUE_UPSERT",
    "RATE_INSERT",
    "SCHEDULE_COLUMNS",
    "SCHEDULE_UPSERT",
    "admit",
    "limited_candidates_sql",
    "queue_counts_sql",
    "queue_load_sql",
    "rate_wait",
    "execution_row",
    "fork_statements",
    "prune_statements",
    "prunable_sql",
    "run_query_sql",
    "journal_entry",
    "journal_params",
    "new_execution_params",
    "receive_entry",
    "receive_outcome",
    "worker_row",
]

#: The schema this flowz reads and writes; `_migrate.MIGRATIONS` brings older ones here.
SCHEMA_VERSION = 8

_EXECUTION_FIELDS = tuple(f.name for f in dataclasses.fields(ExecutionRow))
#: The columns of flowz_executions, in ExecutionRow's field order.
EXECUTION_COLUMNS = ", ".join(_EXECUTION_FIELDS)
_JSON_FIELDS = frozenset({"input", "output", "error"})
_EXECUTION_JSON = [i for i, name in enumerate(_EXECUTION_FIELDS) if name in _JSON_FIELDS]

_JOURNAL_FIELDS = tuple(f.name for f in dataclasses.fields(JournalEntry))
_JOURNAL_JSON = [i for i, name in enumerate(_JOURNAL_FIELDS) if name in _JSON_FIELDS]
#: The columns of flowz_journal that journal_params fills, in its order.
JOURNAL_COLUMNS = "execution_id, " + ", ".join(_JOURNAL_FIELDS)
#: SELECT list of a journal read, in JournalEntry's field order.
JOURNAL_SELECT = ", ".join(_JOURNAL_FIELDS)

#: A read of flowz_workers, in WorkerRow's field order (names: a JSON list).
WORKER_SELECT = "SELECT id, host, pid, started_at, heartbeat_at, queue, names FROM flowz_workers"


def worker_row(raw: Sequence[Any]) -> WorkerRow:
    """A WorkerRow from a WORKER_SELECT row."""
    worker_id, host, pid, started_at, heartbeat_at, queue, names = raw
    listed = loads(names)
    return WorkerRow(
        worker_id,
        host,
        pid,
        started_at,
        heartbeat_at,
        queue,
        tuple(map(str, listed if isinstance(listed, list) else [])),
    )


#: Columns of a new message; its seq is the execution's next (sends hold its row lock).
MESSAGE_INSERT = (
    "INSERT INTO flowz_messages (run_id, seq, topic, value, idempotency_key, created_at) "
    "SELECT {p}, COALESCE(MAX(seq), 0) + 1, {p}, {p}, {p}, {p} FROM flowz_messages "
    "WHERE run_id = {p}"
)
#: Executions past their deadline that wait or sleep beyond it (params: now, now).
EXPIRED = (
    "FROM flowz_executions WHERE deadline IS NOT NULL AND deadline <= {p} "
    "AND (status = 'waiting' OR (status = 'pending' AND run_at > {p}))"
)
#: Wake an execution suspended in a receive on a topic (params: now, now, id, id, topic).
WAKE_RECEIVER = (
    "UPDATE flowz_executions SET status = 'pending', run_at = {p}, updated_at = {p}, "
    "wait_position = NULL, wait_count = 0 "
    "WHERE id = {p} AND status IN ('waiting', 'pending') AND EXISTS (SELECT 1 FROM "
    "flowz_journal WHERE execution_id = {p} AND kind = 'recv' AND status = 'waiting' "
    "AND name = {p})"
)
#: The oldest unread message on a topic (params: id, topic).
NEXT_MESSAGE = (
    "SELECT seq, value FROM flowz_messages WHERE run_id = {p} AND topic = {p} "
    "AND consumed_at IS NULL ORDER BY seq LIMIT 1"
)
#: Set an event's value (params: run_id, name, value, now).
EVENT_UPSERT = (
    "INSERT INTO flowz_events (run_id, name, value, updated_at) VALUES ({p}, {p}, {p}, {p}) "
    "ON CONFLICT (run_id, name) DO UPDATE SET value = excluded.value, "
    "updated_at = excluded.updated_at"
)


#: Append to a stream (params: run_id, name, value, closed, now, run_id, name).
STREAM_APPEND = (
    "INSERT INTO flowz_streams (run_id, name, seq, value, closed, created_at) "
    "SELECT {p}, {p}, COALESCE(MAX(seq), 0) + 1, {p}, {p}, {p} FROM flowz_streams "
    "WHERE run_id = {p} AND name = {p}"
)
#: A stream's values after a seq (params: run_id, name, seq).
STREAM_READ = (
    "SELECT seq, value, closed FROM flowz_streams WHERE run_id = {p} AND name = {p} "
    "AND seq > {p} ORDER BY seq"
)


def check_message_target(
    run_id: str, found: Sequence[Any] | None, where: str, *, ended_ok: bool = False
) -> None:
    """Refuse a message to what is not a workflow execution, or to one that ended.

    `found`: the execution's (kind, status), or None. `ended_ok`: only the first check
    (a repeated idempotency key is answered before the run's end matters).
    """
    if found is None or found[0] != "workflow":
        raise RunNotFoundError(f"no workflow run with id {run_id!r} {where}: see `flowz list`")
    if found[1] in TERMINAL_STATUSES and not ended_ok:
        raise RunEndedError(
            f"run {run_id!r} has {'been ' if found[1] == 'cancelled' else ''}{found[1]}: a "
            "message sent to it would never be read"
        )


#: The columns of flowz_queues that QueueLimits holds, in its order.
QUEUE_COLUMNS = "name, concurrency, per_worker, rate_limit, rate_period, per_partition"
#: Store a queue's limits (params: the QUEUE_COLUMNS, then now).
QUEUE_UPSERT = (
    f"INSERT INTO flowz_queues ({QUEUE_COLUMNS}, updated_at) VALUES ({{p}}, {{p}}, {{p}}, {{p}}, "
    "{p}, {p}, {p}) ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, "
    "per_worker = excluded.per_worker, rate_limit = excluded.rate_limit, "
    "rate_period = excluded.rate_period, per_partition = excluded.per_partition, "
    "updated_at = excluded.updated_at"
)
#: SET list of a claim (params: token, owner, lease expiry, now, now).
CLAIMED = (
    "status = 'running', claim_token = {p}, lease_owner = {p}, lease_expires_at = {p}, "
    "updated_at = {p}, started_at = coalesce(started_at, {p}), "
    "attempt = CASE WHEN attempt = 0 THEN 1 ELSE attempt END"
)
#: How many executions each worker runs now (its id, the count).
RUNNING_BY_WORKER = (
    "SELECT lease_owner, count(*) FROM flowz_executions WHERE status = 'running' "
    "AND lease_owner IS NOT NULL GROUP BY lease_owner"
)
#: The stored queue definitions, as QUEUE_COLUMNS.
QUEUES_DEFINED = f"SELECT {QUEUE_COLUMNS} FROM flowz_queues"
#: The queues that hold pending or running work.
QUEUES_IN_USE = "SELECT DISTINCT queue FROM flowz_executions WHERE status IN ('pending', 'running')"
#: Record one start in a rate-limited queue (params: queue, at, execution id).
RATE_INSERT = "INSERT INTO flowz_queue_starts (queue, at, execution_id) VALUES ({p}, {p}, {p})"
#: The columns of flowz_schedules that ScheduleRow holds, in its order.
SCHEDULE_COLUMNS = "name, cron, timezone, catch_up, paused, last_tick"
#: Store a schedule's definition; its pause and last tick stay (params: name, cron, tz,
#: catch_up, now).
SCHEDULE_UPSERT = (
    "INSERT INTO flowz_schedules (name, cron, timezone, catch_up, paused, updated_at) "
    "VALUES ({p}, {p}, {p}, {p}, 0, {p}) ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, "
    "timezone = excluded.timezone, catch_up = excluded.catch_up, "
    "updated_at = excluded.updated_at"
)


def queue_counts_sql(mark: str) -> list[str]:
    """What a limited claim reads under the queue's lock, each with the queue as first param.

    Running executions per partition key; then (params: queue, window start) the starts
    of the last rate period are trimmed, and (params: queue) counted.
    """
    return [
        "SELECT partition_key, count(*) FROM flowz_executions WHERE status = 'running' "
        f"AND queue = {mark} GROUP BY partition_key",
        f"DELETE FROM flowz_queue_starts WHERE queue = {mark} AND at <= {mark}",
        f"SELECT count(*), min(at) FROM flowz_queue_starts WHERE queue = {mark}",
    ]


def queue_load_sql(mark: str, now: str) -> str:
    """A queue's running, due pending, and recent starts: one row.

    `now` is the dialect's clock (a placeholder, or an SQL expression). Params: queue,
    queue, [now,] queue, [now,] rate period (0 without a rate).
    """
    return (
        "SELECT (SELECT count(*) FROM flowz_executions WHERE status = 'running' AND "
        f"queue = {mark}), (SELECT count(*) FROM flowz_executions WHERE status = 'pending' "
        f"AND queue = {mark} AND run_at <= {now}), (SELECT count(*) FROM flowz_queue_starts "
        f"WHERE queue = {mark} AND at > {now} - {mark})"
    )


def limited_candidates_sql(mark: str, names: str, per_partition: bool) -> str:
    """Due pending executions of a queue, best first, without full partitions.

    Params: queue, now, (the names, as `names` spells them), [queue, per_partition],
    limit. `names` is the dialect's test of the name column.
    """
    full = (
        " AND (partition_key IS NULL OR partition_key NOT IN (SELECT partition_key FROM "
        f"flowz_executions WHERE status = 'running' AND queue = {mark} AND partition_key "
        f"IS NOT NULL GROUP BY partition_key HAVING count(*) >= {mark}))"
        if per_partition
        else ""
    )
    return (
        "SELECT id, partition_key, started_at FROM flowz_executions WHERE status = 'pending' "
        f"AND queue = {mark} AND run_at <= {mark} AND {names}{full} {CLAIM_ORDER} LIMIT {mark}"
    )


def admit(
    limits: QueueLimits,
    wanted: int,
    running: dict[str | None, int],
    starts: int,
    candidates: Sequence[Sequence[Any]],
) -> list[Sequence[Any]]:
    """The candidates (id, partition_key, ...) a claim may take within the queue's limits.

    `running`: the queue's running executions by partition key; `starts`: its starts
    in the current rate window.
    """
    budget = wanted
    if limits.concurrency is not None:
        budget = min(budget, limits.concurrency - sum(running.values()))
    if limits.rate_limit is not None:
        budget = min(budget, limits.rate_limit - starts)
    taken: list[Sequence[Any]] = []
    by_partition = dict(running)
    for candidate in candidates:
        if len(taken) >= budget:
            break
        key = candidate[1]
        if limits.per_partition is not None and key is not None:
            if by_partition.get(key, 0) >= limits.per_partition:
                continue
            by_partition[key] = by_partition.get(key, 0) + 1
        taken.append(candidate)
    return taken


def rate_wait(
    limits: QueueLimits,
    candidates: int,
    taken: int,
    starts: int,
    oldest: float | None,
    now: float,
) -> float | None:
    """Seconds until a rate-limited queue whose window is full has room, or None."""
    if limits.rate_limit is None or limits.rate_period is None or taken >= candidates:
        return None
    if starts + taken < limits.rate_limit:
        return None  # held back by another limit, not the rate
    return max(0.0, (now if oldest is None else oldest) + limits.rate_period - now)


def check_new_runs(runs: Sequence[NewExecution], found: Sequence[Sequence[Any]]) -> None:
    """Refuse a batch of new runs if an id is taken by another run (rows: id, name, parent, input).

    The same workflow with the same arguments is the same run (starting it again is a
    no-op); anything else is an error naming the id, and the batch stores nothing.
    """
    wanted = {r.id: r for r in runs}
    for run_id, name, parent_id, stored in found:
        run = wanted[run_id]
        if parent_id is not None or name != run.name:
            raise UsageError(
                f"the id {run_id!r} already belongs to "
                f"{'a child execution' if parent_id else f'a run of {name}'}, not of "
                f"{run.name}: choose other ids (nothing of this batch was stored)"
            )
        if loads(stored) != run.input:
            raise UsageError(
                f"run {run_id!r} already exists with other arguments: an id names one run; "
                "choose other ids for new arguments (nothing of this batch was stored)"
            )


def check_fork_source(
    source_id: str, found: Sequence[Any] | None, new_id: str, taken: bool, where: str
) -> None:
    """Refuse to fork what is not an ended top-level run, or into an id in use.

    `found`: the source's (kind, parent_id, status), or None; `taken`: `new_id` exists.
    """
    if found is None or found[0] != "workflow" or found[1] is not None:
        raise RunNotFoundError(f"no top-level run with id {source_id!r} {where}: see `flowz list`")
    if found[2] not in TERMINAL_STATUSES:
        raise UsageError(
            f"run {source_id!r} is {found[2]}: only an ended run can be forked (a copy of a "
            f"running one would race it). Wait for it to end, or cancel it "
            f"(`flowz cancel {source_id}`), then fork"
        )
    if taken:
        raise UsageError(f"the id {new_id!r} already names a run: choose another id for the fork")


def receive_outcome(
    taken: Sequence[Any] | None, message: Sequence[Any] | None, deadline: float | None, now: float
) -> tuple[str, JSON]:
    """What a receive does: "taken", "message", "timeout" or "wait", and the value.

    "taken": the journal entry at its position has it already (a repeated call);
    `taken`: the (status, output) of the journal entry at its position, if any;
    `message`: the oldest unread (seq, value).
    """
    if taken is not None and taken[0] == "succeeded":
        return "taken", loads(taken[1])
    if message is not None:
        return "message", loads(message[1])
    if deadline is not None and deadline <= now:
        return "timeout", None
    return "wait", None


def receive_entry(
    position: int, topic: str, outcome: str, value: JSON, deadline: float | None, now: float
) -> JournalEntry:
    """The journal entry a receive writes: what it took (or its timeout), or that it waits."""
    if outcome == "wait":
        return JournalEntry(
            position, "recv", topic, "waiting", output={"deadline": deadline}, started_at=now
        )
    return JournalEntry(
        position, "recv", topic, "succeeded", output=value, started_at=now, finished_at=now
    )


#: SET list that gives a lease up: no owner, no token, no expiry.
LEASE_CLEARED = "claim_token = NULL, lease_owner = NULL, lease_expires_at = NULL"
#: Which due pending executions a claim takes first.
CLAIM_ORDER = "ORDER BY priority DESC, run_at"
#: The terminal statuses as an SQL list.
TERMINAL_SQL = ", ".join(f"'{s}'" for s in TERMINAL_STATUSES)


def cancel_descendants_sql(mark: str, now: str) -> str:
    """Cancel the unfinished descendants of one workflow execution (its id is the parameter).

    A workflow that ends, failed or not, takes its unfinished children with it, in the
    transaction that ends it (Temporal's parent-close policy): nothing of a failed run
    runs later. Descendants are found through the parent_id index, never by a scan of
    the whole run. `mark` is the dialect's placeholder, `now` its clock.
    """
    return (
        "WITH RECURSIVE tree(id) AS (SELECT id FROM flowz_executions WHERE parent_id = "
        f"{mark} UNION ALL SELECT e.id FROM flowz_executions e JOIN tree ON e.parent_id = "
        f"tree.id) UPDATE flowz_executions SET status = 'cancelled', finished_at = {now}, "
        f"updated_at = {now}, {LEASE_CLEARED} WHERE id IN (SELECT id FROM tree) "
        f"AND status NOT IN ({TERMINAL_SQL})"
    )


def run_query_sql(query: RunQuery, mark: str, *, hint: bool = False) -> tuple[str, list[Any]]:
    """A `list_runs` read: statement and parameters, newest first then by id, keyset-paged.

    Top-level filters match the partial indexes ix_flowz_executions_runs (none),
    _runs_status (status) and _runs_name (name), all ordered (created_at, id), so
    the page is read from an index, never sorted from a scan. `hint`: name that
    index (SQLite's INDEXED BY: without statistics its planner may pick another).
    """
    where, params = _run_filter(query, mark)
    if len(query.statuses) == 1:
        where.append(f"status = {mark}")
    elif query.statuses:
        where.append(f"status IN ({', '.join([mark] * len(query.statuses))})")
    params.extend(query.statuses)
    if query.after is not None:
        where.append(f"(created_at, id) < ({mark}, {mark})")
        params.extend(query.after)
    params.append(query.limit)
    index = _index_hint(query, by_status=len(query.statuses) == 1) if hint else ""
    return (
        f"SELECT {EXECUTION_COLUMNS} FROM flowz_executions{index} WHERE {' AND '.join(where)} "
        f"ORDER BY created_at DESC, id DESC LIMIT {mark}",
        params,
    )


def run_counts_sql(query: RunQuery, mark: str, *, hint: bool = False) -> tuple[str, list[Any]]:
    """How many runs of each status match `query`'s other filters (its statuses, page ignored).

    Top-level runs are counted from _runs_status (status, created_at, id), which covers
    the count without a table read; with a name, from _runs_name; children from the
    parent index (bounded by the parent's fan-out).
    """
    where, params = _run_filter(query, mark)
    index = _index_hint(query, by_status=True) if hint else ""
    return (
        f"SELECT status, count(*) FROM flowz_executions{index} WHERE {' AND '.join(where)} "
        "GROUP BY status",
        params,
    )


def pending_unknown_sql(known: int, mark: str, now: str) -> str:
    """Due pending executions, oldest first, whose name is none of `known` parameters.

    Params: `known` names, the creation cutoff, the limit. Read through the claim
    index (pending only): bounded by the backlog, and run once a minute.
    """
    unknown = f" AND name NOT IN ({', '.join([mark] * known)})" if known else ""
    return (
        f"SELECT {EXECUTION_COLUMNS} FROM flowz_executions WHERE status = 'pending' "
        f"AND run_at <= {now}{unknown} AND created_at < {mark} ORDER BY created_at LIMIT {mark}"
    )


def _index_hint(query: RunQuery, *, by_status: bool) -> str:
    """SQLite's INDEXED BY for a run query: children, by name, by status, or all runs."""
    if query.parent is not None:
        name = "parent"
    elif query.name is not None:
        name = "runs_name"
    else:
        name = "runs_status" if by_status else "runs"
    return f" INDEXED BY ix_flowz_executions_{name}"


def _run_filter(query: RunQuery, mark: str) -> tuple[list[str], list[Any]]:
    """The WHERE terms (and parameters) of a run query but its statuses and its page."""
    where = ["parent_id IS NULL"] if query.parent is None else [f"parent_id = {mark}"]
    params: list[Any] = [] if query.parent is None else [query.parent]
    for clause, value in (
        (f"name = {mark}", query.name),
        (f"created_at >= {mark}", query.since),
        (f"created_at < {mark}", query.until),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    return where, params


def prunable_sql(statuses: Sequence[str], mark: str, select: str, *, hint: bool = False) -> str:
    """Ended top-level runs created and finished before a time (params: statuses, t, t).

    Read through ix_flowz_executions_runs_status: created before `t` is a range of it
    (`hint`: say so, for SQLite).
    """
    index = " INDEXED BY ix_flowz_executions_runs_status" if hint else ""
    return (
        f"SELECT {select} FROM flowz_executions{index} WHERE parent_id IS NULL AND status IN "
        f"({', '.join([mark] * len(statuses))}) AND created_at < {mark} AND finished_at < {mark}"
    )


def prune_statements(roots: int, mark: str) -> list[str]:
    """Delete `roots` runs' trees (each statement's params: the root ids), children last."""
    ids = ", ".join([mark] * roots)
    tree = f"SELECT id FROM flowz_executions WHERE root_id IN ({ids})"
    return [
        *(
            f"DELETE FROM {table} WHERE {column} IN ({tree})"
            for table, column in (
                ("flowz_journal", "execution_id"),
                ("flowz_messages", "run_id"),
                ("flowz_events", "run_id"),
                ("flowz_streams", "run_id"),
            )
        ),
        f"DELETE FROM flowz_executions WHERE root_id IN ({ids})",
    ]


def fork_statements(
    source_id: str, new_id: str, at: int, rerun: Sequence[str], mark: str, now: float
) -> list[tuple[str, list[Any]]]:
    """Copy a run's children before `at` (with subtrees and journals) and its journal.

    The new run's own row is inserted first, by the caller. Copies keep their
    status and results; ids swap the source's prefix for the new run's. The
    children in `rerun` are inserted fresh (pending, no attempt) without subtrees.
    """
    cut = len(source_id) + 1  # substr() is 1-based: what follows the source id
    skip = f" AND id NOT IN ({', '.join([mark] * len(rerun))})" if rerun else ""
    tree = (
        "WITH RECURSIVE tree(id) AS (SELECT id FROM flowz_executions WHERE parent_id = "
        f"{mark} AND position < {mark}{skip} UNION ALL SELECT e.id FROM flowz_executions e "
        "JOIN tree ON e.parent_id = tree.id) "
    )
    tree_params: list[Any] = [source_id, at, *rerun]
    renamed = f"{mark} || substr(id, {mark}), {mark}, {mark} || substr(parent_id, {mark})"
    renamed_params: list[Any] = [new_id, cut, new_id, new_id, cut]
    columns = (
        "id, root_id, parent_id, position, child_index, kind, name, input, output, error, "
        "status, attempt, max_attempts, run_at, queue, priority, partition_key, wait_count, "
        "created_at, updated_at, started_at, finished_at"
    )
    statements: list[tuple[str, list[Any]]] = [
        (
            f"{tree}INSERT INTO flowz_executions ({columns}) SELECT {renamed}, position, "
            "child_index, kind, name, input, output, error, status, attempt, max_attempts, "
            f"run_at, queue, priority, partition_key, 0, created_at, {mark}, started_at, "
            "finished_at FROM flowz_executions WHERE id IN (SELECT id FROM tree)",
            [*tree_params, *renamed_params, now],
        ),
        (
            f"{tree}INSERT INTO flowz_journal ({JOURNAL_COLUMNS}) SELECT {mark} || "
            f"substr(execution_id, {mark}), {JOURNAL_SELECT} FROM flowz_journal "
            "WHERE execution_id IN (SELECT id FROM tree)",
            [*tree_params, new_id, cut],
        ),
        (
            f"INSERT INTO flowz_journal ({JOURNAL_COLUMNS}) SELECT {mark}, {JOURNAL_SELECT} "
            f"FROM flowz_journal WHERE execution_id = {mark} AND position < {mark}",
            [new_id, source_id, at],
        ),
        # Started: the worker that claims it reads the copied journal (a resumed claim).
        (f"UPDATE flowz_executions SET started_at = {mark} WHERE id = {mark}", [now, new_id]),
    ]
    if rerun:
        statements.append(
            (
                f"INSERT INTO flowz_executions ({columns}) SELECT {renamed}, position, "
                "child_index, kind, name, input, NULL, NULL, 'pending', 0, max_attempts, "
                f"{mark}, queue, priority, partition_key, 0, {mark}, {mark}, NULL, NULL "
                "FROM flowz_executions "
                f"WHERE id IN ({', '.join([mark] * len(rerun))})",
                [*renamed_params, now, now, now, *rerun],
            )
        )
    return statements


def dumps_or_none(value: JSON) -> str | None:
    """JSON text, or None for SQL NULL."""
    return None if value is None else dumps(value)


def execution_row(r: Sequence[Any]) -> ExecutionRow:
    """An ExecutionRow from a row whose first columns are EXECUTION_COLUMNS."""
    values = list(r[: len(_EXECUTION_FIELDS)])  # a claim appends columns of its own
    for i in _EXECUTION_JSON:
        values[i] = loads(values[i])
    return ExecutionRow(*values)


#: The columns of a ChildOutcome, in its order.
CHILD_OUTCOME_COLUMNS = "id, name, position, child_index, status, output, error, finished_at"


def child_outcomes_sql(
    mark: str,
    in_positions: str,
    parent_id: str,
    positions: Any,
    after: tuple[int, int] | None,
    limit: int,
) -> tuple[str, tuple[Any, ...]]:
    """One keyset page of child outcomes: statement and parameters.

    `in_positions` is the dialect's test of `position` against `positions` (the
    dialect's form of the list).
    """
    first, index = after if after is not None else (-1, -1)
    return (
        f"SELECT {CHILD_OUTCOME_COLUMNS} FROM flowz_executions WHERE parent_id = {mark} "
        f"AND {in_positions} AND (position, child_index) > ({mark}, {mark}) "
        f"ORDER BY position, child_index LIMIT {mark}",
        (parent_id, positions, first, index, limit),
    )


def child_outcome(r: Sequence[Any]) -> ChildOutcome:
    """A ChildOutcome from a row selected as CHILD_OUTCOME_COLUMNS."""
    return ChildOutcome(r[0], r[1], r[2], r[3], r[4], loads(r[5]), loads(r[6]), r[7])


def journal_entry(r: Sequence[Any]) -> JournalEntry:
    """A JournalEntry from a row selected as JOURNAL_SELECT."""
    values = list(r)
    for i in _JOURNAL_JSON:
        values[i] = loads(values[i])
    return JournalEntry(*values)


def journal_params(execution_id: str, e: JournalEntry) -> tuple[Any, ...]:
    """The values of JOURNAL_COLUMNS for one entry."""
    # Spelled out: this runs once per inline step (a generator over the fields cost more).
    return (
        execution_id,
        e.position,
        e.kind,
        e.name,
        e.status,
        dumps_or_none(e.output),
        dumps_or_none(e.error),
        e.attempt,
        e.started_at,
        e.finished_at,
    )


def new_execution_params(e: NewExecution) -> tuple[Any, ...]:
    """The insert values of a new execution.

    In order: id, root_id, parent_id, position, child_index, kind, name, input,
    max_attempts, run_at, queue, priority, deadline, partition_key, trace_context.
    """
    return (
        e.id,
        e.root_id,
        e.parent_id,
        e.position,
        e.child_index,
        e.kind,
        e.name,
        dumps(e.input),
        e.max_attempts,
        e.run_at,
        e.queue,
        e.priority,
        e.deadline,
        e.partition_key,
        e.trace_context,
    )


def check_schema_version(found: int | None, where: str) -> None:
    """Refuse a database whose schema is not the one this flowz knows."""
    if found is None or found == SCHEMA_VERSION:
        return
    if found < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the database {where} has schema v{found} and this flowz needs "
            f"v{SCHEMA_VERSION}: run `flowz db upgrade` (with the same FLOWZ_DATABASE_URL)"
        )
    raise SchemaVersionError(
        f"the database {where} has schema v{found}, newer than the v{SCHEMA_VERSION} this "
        "flowz knows: upgrade flowz (pip install -U flowz) on this machine"
    )


class ChangeSignal:
    """What a store's waiters wait on: a count of changes seen, and an event per wait."""

    def __init__(self) -> None:
        #: Changes seen so far: this process's commits, and notifications from others.
        self.generation = 0
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        """A change happened: wake every waiter."""
        self.generation += 1
        self.notify_waiters()

    def notify_waiters(self) -> None:
        """Wake every waiter without a change (they look again, and one may take a job over)."""
        if self._event is not None:
            self._event.set()
            self._event = None

    def event(self) -> anyio.Event:
        """The event the next `notify()` sets."""
        if self._event is None:
            self._event = anyio.Event()
        return self._event
