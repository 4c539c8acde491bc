"""PostgresStore: SKIP LOCKED claims, fused one-statement hot paths, NOTIFY on every change.

Leases and due times are compared with the database's clock, so a worker whose
clock drifts cannot steal or keep work it should not. The pool, retries, error
mapping and LISTEN live in `_pg_connection`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from .._serde import dumps, loads
from .._types import JSON
from ..errors import RunNotFoundError, StoreError
from ._batch import Append, Finish, GroupCommit, NewRun, Pending
from ._pg_connection import CHANNEL, Cursor, PgConnector, retried
from ._protocol import (
    ChildOutcome,
    Claim,
    ExecutionRow,
    Fence,
    JournalEntry,
    LeaseLost,
    NewExecution,
    QueueLimits,
    QueueRow,
    RunQuery,
    ScheduleRow,
    StreamItem,
    WorkerRow,
)
from ._sql import (
    CLAIM_ORDER,
    CLAIMED,
    EVENT_UPSERT,
    EXECUTION_COLUMNS,
    EXPIRED,
    JOURNAL_COLUMNS,
    JOURNAL_SELECT,
    LEASE_CLEARED,
    MESSAGE_INSERT,
    QUEUE_COLUMNS,
    QUEUE_UPSERT,
    QUEUES_DEFINED,
    QUEUES_IN_USE,
    RATE_INSERT,
    RUNNING_BY_WORKER,
    SCHEDULE_COLUMNS,
    SCHEDULE_UPSERT,
    STREAM_APPEND,
    STREAM_READ,
    TERMINAL_SQL,
    WAKE_RECEIVER,
    WORKER_SELECT,
    admit,
    cancel_descendants_sql,
    check_fork_source,
    check_message_target,
    check_new_runs,
    child_outcome,
    child_outcomes_sql,
    dumps_or_none,
    execution_row,
    fork_statements,
    journal_entry,
    journal_params,
    limited_candidates_sql,
    new_execution_params,
    pending_unknown_sql,
    prunable_sql,
    prune_statements,
    queue_counts_sql,
    queue_load_sql,
    rate_wait,
    receive_entry,
    receive_outcome,
    run_counts_sql,
    run_query_sql,
    worker_row,
)

__all__ = ["PostgresStore"]

_COLUMNS = EXECUTION_COLUMNS
_JOURNAL_UPSERT = (
    "ON CONFLICT (execution_id, position) DO UPDATE SET kind = excluded.kind, "
    "name = excluded.name, status = excluded.status, output = excluded.output, "
    "error = excluded.error, attempt = excluded.attempt, started_at = excluded.started_at, "
    "finished_at = excluded.finished_at"
)
_NOW = "extract(epoch from clock_timestamp())::float8"
_CANCEL_DESCENDANTS = cancel_descendants_sql("%s", _NOW)
_MIGRATION_LOCK = 0x666C6F777A  # pg_advisory_xact_lock key: one migrator at a time
#: Takes the execution for this write (fenced by its token) and stamps updated_at.
_JOURNAL_INSERT = (
    f"INSERT INTO flowz_journal ({JOURNAL_COLUMNS}) "
    f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) {_JOURNAL_UPSERT}"
)
# A receive's look, one row: the journal entry at its position (a repeated call), and
# the oldest unread message of its topic (params: id, position, id, topic).
_RECEIVE_LOOK = (
    "SELECT j.status, j.output, m.seq, m.value FROM (SELECT 1) AS one "
    "LEFT JOIN flowz_journal j ON j.execution_id = %s AND j.position = %s "
    "LEFT JOIN LATERAL (SELECT seq, value FROM flowz_messages WHERE run_id = %s "
    "AND topic = %s AND consumed_at IS NULL ORDER BY seq LIMIT 1) m ON true"
)
_FENCE = (
    f"UPDATE flowz_executions SET updated_at = {_NOW} "
    "WHERE id = %s AND claim_token = %s AND status = 'running'"
)

# Many executions' journal entries in one statement: each execution fenced once (its
# row locked, in id order), the entries of valid fences written; returns those fences.
_JOURNAL_BATCH = (
    "WITH j AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[], "
    "%s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::float8[], %s::float8[]) "
    "AS t(tok, eid, position, kind, name, status, output, error, attempt, started_at, "
    f"finished_at)), fenced AS (UPDATE flowz_executions e SET updated_at = {_NOW} "
    "FROM (SELECT DISTINCT eid, tok FROM j ORDER BY eid) f WHERE e.id = f.eid "
    "AND e.claim_token = f.tok AND e.status = 'running' RETURNING e.id, e.claim_token), "
    f"written AS (INSERT INTO flowz_journal ({JOURNAL_COLUMNS}) SELECT eid, position, "
    "kind, name, status, output, error, attempt, started_at, finished_at FROM j JOIN "
    f"fenced ON fenced.id = j.eid AND fenced.claim_token = j.tok {_JOURNAL_UPSERT}) "
    "SELECT id, claim_token FROM fenced"
)

# One statement for any width: arrays unnested server-side, no per-child round trip.
_INSERT_EXECUTIONS = (
    "INSERT INTO flowz_executions (id, root_id, parent_id, position, child_index, kind, "
    "name, input, status, attempt, max_attempts, run_at, queue, priority, deadline, "
    "partition_key, trace_context, wait_count, created_at, updated_at) "
    f"SELECT i, r, p, pos, ci, k, n, inp, 'pending', 0, ma, coalesce(ra, {_NOW}), q, pr, "
    f"dl, pk, tc, 0, {_NOW}, {_NOW} FROM unnest(%s::text[], %s::text[], %s::text[], "
    "%s::int[], %s::int[], %s::text[], %s::text[], %s::text[], %s::int[], %s::float8[], "
    "%s::text[], %s::int[], %s::float8[], %s::text[], %s::text[]) AS t(i, r, p, pos, ci, k, "
    "n, inp, ma, ra, q, pr, dl, pk, tc) ON CONFLICT (id) DO NOTHING"
)


_INSERT_CHUNK = 5_000  # executions per insert statement
_ANALYZE_AFTER = 10_000  # executions inserted by this process before statistics are refreshed


def _insert_params(executions: Sequence[NewExecution]) -> list[list[Any]]:
    return [list(column) for column in zip(*map(new_execution_params, executions), strict=True)]


class PostgresStore:
    """The PostgreSQL store, for many workers on many machines.

    Examples:
        >>> store = PostgresStore("postgresql://root@127.0.0.1/flowz")  # doctest: +SKIP
        >>> await store.open()  # doctest: +SKIP
    """

    def __init__(
        self, url: str, *, max_connections: int = 10, acquire_timeout: float = 30.0
    ) -> None:
        self.db = PgConnector(url, max_connections=max_connections, acquire_timeout=acquire_timeout)
        self._unanalyzed = 0  # executions inserted since this process last ran ANALYZE
        self._analyzed_rows = 0.0
        self._finishing = GroupCommit[Finish](self._flush_finishes)
        self._appending = GroupCommit[Append](self._flush_appends)
        self._creating = GroupCommit[NewRun](self._flush_creates)

    @property
    def url(self) -> str:
        """The database URL."""
        return self.db.url

    async def open(self) -> None:
        """Open the pool; fail clearly if the server cannot be reached."""
        await self.db.open()

    async def aclose(self) -> None:
        await self.db.aclose()

    # -- plumbing -----------------------------------------------------------
    async def _fence(self, cur: Cursor, fence: Fence) -> None:
        await cur.execute(_FENCE, (fence.execution_id, fence.token))
        if cur.rowcount != 1:
            raise LeaseLost(fence.execution_id)

    @staticmethod
    async def _insert_entries(
        cur: Cursor, execution_id: str, entries: Sequence[JournalEntry]
    ) -> None:
        if not entries:
            return
        await cur.executemany(
            f"INSERT INTO flowz_journal ({JOURNAL_COLUMNS}) "
            f"VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) {_JOURNAL_UPSERT}",
            [journal_params(execution_id, e) for e in entries],
        )

    @staticmethod
    async def _insert_executions(cur: Cursor, executions: Sequence[NewExecution]) -> int:
        inserted = 0
        # In chunks, in the one transaction: a gather of 100,000 never has every child's
        # values adapted at once (the parent's worker peaked at 220 MB).
        for start in range(0, len(executions), _INSERT_CHUNK):
            chunk = executions[start : start + _INSERT_CHUNK]
            await cur.execute(_INSERT_EXECUTIONS, _insert_params(chunk))
            inserted += cur.rowcount
        return inserted

    async def _note_inserted(self, count: int) -> None:
        """Refresh the planner's statistics once the table has grown by half or more.

        Until autovacuum's analyze (a minute or more away), the planner takes a
        million new pending children for an empty table and claims them with a bitmap
        scan and a sort of every pending row: 1.6 s a claim. ANALYZE samples a fixed
        number of rows (~0.1 s); it runs after the insert's commit, and a failure only
        leaves the statistics as they were.
        """
        self._unanalyzed += count
        if self._unanalyzed < max(_ANALYZE_AFTER, self._analyzed_rows / 2):
            return
        self._unanalyzed = 0
        with contextlib.suppress(StoreError):
            await self.db.execute("ANALYZE flowz_executions", ())
            rows = await self.db.select(
                "SELECT reltuples FROM pg_class WHERE relname = 'flowz_executions'", ()
            )
            self._analyzed_rows = float(rows[0][0]) if rows else 0.0

    async def _announce(self, cur: Cursor) -> None:
        """Wake listening workers when this transaction commits."""
        await cur.execute(f"NOTIFY {CHANNEL}")
        self.db.expect_echo()

    # -- lifecycle ----------------------------------------------------------
    async def schema_version(self) -> int | None:
        try:
            rows = await self.db.select("SELECT max(version) FROM flowz_schema", ())
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UndefinedTable):
                return None  # an empty database
            raise
        return None if rows[0][0] is None else int(rows[0][0])

    @retried
    async def migrate(self) -> list[str]:
        from ._migrate import plan

        async with self.db.transaction() as cur:
            # Processes starting together on an empty database: one creates, the others wait.
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await cur.execute("SELECT to_regclass('flowz_schema') IS NOT NULL")
            exists = (await cur.fetchone() or [False])[0]
            found = None
            if exists:
                await cur.execute("SELECT max(version) FROM flowz_schema")
                found = (await cur.fetchone() or [None])[0]
            steps = plan(found, "postgresql", f"at {self.db.safe_url()}")
            for step in steps:
                for statement in step.statements:
                    await cur.execute(statement)
                await cur.execute("INSERT INTO flowz_schema (version) VALUES (%s)", (step.version,))
        return [f"v{step.version}: {step.description}" for step in steps]

    def wall_now(self) -> float:
        return time.time()  # ticks are not fenced by it: the server's clock is not needed

    def change_mark(self) -> object:
        return self.db.changes.generation

    async def wait_for_change(self, timeout: float, since: object | None = None) -> None:
        await self.db.wait_for_change(timeout, since)

    # -- runs ---------------------------------------------------------------
    async def create_run(self, run: NewExecution) -> tuple[ExecutionRow, bool]:
        # Concurrent starts of one loop turn share one statement (one commit).
        new = NewRun(run)
        await self._creating.submit(new)
        assert new.row is not None  # filled in by the flush, or it raised
        return new.row, new.created

    async def _flush_creates(self, batch: list[Pending[NewRun]]) -> None:
        # One autocommit statement: insert the ids that do not exist, wake the workers if
        # one was new, return every row either way. The outer SELECT does not see the
        # CTE's new rows (one snapshot), so exactly one of the two branches returns each.
        runs = [p.item.run for p in batch]
        ids = list(dict.fromkeys(r.id for r in runs))
        rows = await self.db.select(
            f"WITH created AS ({_INSERT_EXECUTIONS} RETURNING {_COLUMNS}) "
            f"SELECT {_COLUMNS}, true FROM created "
            f"CROSS JOIN (SELECT pg_notify('{CHANNEL}', '')) AS announced "
            f"UNION ALL SELECT {_COLUMNS}, false FROM flowz_executions WHERE id = ANY(%s)",
            [*_insert_params(runs), ids],
        )
        found = {row[0]: row for row in rows}
        if len(found) < len(ids):
            # Another client inserted the same id concurrently: the insert waited for it,
            # but this statement's snapshot predates it. The next statement sees it.
            rows = await self.db.select(
                f"SELECT {_COLUMNS}, false FROM flowz_executions WHERE id = ANY(%s)",
                ([i for i in ids if i not in found],),
            )
            found |= {row[0]: row for row in rows}
        for pending in batch:
            row = found[pending.item.run.id]
            pending.item.row, pending.item.created = execution_row(row), row[-1]
            # The same id twice in one batch: the first of them created it.
            found[row[0]] = (*row[:-1], False)

    async def create_runs(self, runs: Sequence[NewExecution]) -> int:
        created = await self._create_runs(runs)
        await self._note_inserted(created)
        return created

    @retried
    async def _create_runs(self, runs: Sequence[NewExecution]) -> int:
        async with self.db.transaction() as cur:
            await cur.execute(_INSERT_EXECUTIONS + " RETURNING id", _insert_params(runs))
            created = {row[0] for row in await cur.fetchall()}
            if len(created) < len(runs):
                # Taken ids: by an earlier run, or by a concurrent insert this one waited
                # for (visible now). A mismatch raises, and the transaction rolls back.
                await cur.execute(
                    "SELECT id, name, parent_id, input FROM flowz_executions WHERE id = ANY(%s)",
                    ([r.id for r in runs if r.id not in created],),
                )
                check_new_runs(runs, await cur.fetchall())
            if created:
                await cur.execute(f"SELECT pg_notify('{CHANNEL}', '')")
        return len(created)

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        rows = await self.db.select(
            f"SELECT {_COLUMNS} FROM flowz_executions WHERE id = %s", (execution_id,)
        )
        return execution_row(rows[0]) if rows else None

    async def list_executions(self, root_id: str) -> list[ExecutionRow]:
        rows = await self.db.select(
            f"SELECT {_COLUMNS} FROM flowz_executions WHERE root_id = %s "
            "ORDER BY parent_id IS NOT NULL, created_at, parent_id, position, child_index",
            (root_id,),
        )
        return [execution_row(r) for r in rows]

    async def list_runs(self, query: RunQuery) -> list[ExecutionRow]:
        sql, params = run_query_sql(query, "%s")
        return [execution_row(r) for r in await self.db.select(sql, params)]

    async def count_runs(self, query: RunQuery) -> dict[str, int]:
        sql, params = run_counts_sql(query, "%s")
        return {str(status): int(n) for status, n in await self.db.select(sql, params)}

    async def pending_unknown(
        self, known: Sequence[str], before: float, limit: int
    ) -> list[ExecutionRow]:
        sql = pending_unknown_sql(len(known), "%s", _NOW)
        params = [*known, before, limit]
        return [execution_row(r) for r in await self.db.select(sql, params)]

    async def running_by_worker(self) -> dict[str, int]:
        rows = await self.db.select(RUNNING_BY_WORKER, ())
        return {str(owner): int(n) for owner, n in rows}

    @retried
    async def fork_run(
        self, source_id: str, new_id: str, at: int, rerun: Sequence[str]
    ) -> ExecutionRow:
        async with self.db.transaction() as cur:
            await cur.execute(
                "SELECT kind, parent_id, status, name, input, queue, priority, partition_key, "
                f"{_NOW} FROM flowz_executions WHERE id = %s FOR SHARE",
                (source_id,),
            )
            found = await cur.fetchone()
            await cur.execute("SELECT 1 FROM flowz_executions WHERE id = %s", (new_id,))
            taken = await cur.fetchone() is not None
            check_fork_source(source_id, found, new_id, taken, f"at {self.db.safe_url()}")
            assert found is not None
            _, _, _, name, payload, queue, priority, partition, now = found
            root = NewExecution(
                id=new_id, root_id=new_id, kind="workflow", name=name, input=loads(payload),
                queue=queue, priority=priority, partition_key=partition,
            )  # fmt: skip
            await self._insert_executions(cur, [root])
            for sql, params in fork_statements(source_id, new_id, at, rerun, "%s", now):
                await cur.execute(sql, params)
            await cur.execute(f"SELECT {_COLUMNS} FROM flowz_executions WHERE id = %s", (new_id,))
            created = execution_row(await cur.fetchone())  # type: ignore[arg-type]
            await self._announce(cur)
        return created

    @retried
    async def prune(self, before: float, statuses: Sequence[str], limit: int) -> int:
        async with self.db.transaction() as cur:
            # Locked: a retry of one of these runs waits, then finds it gone.
            await cur.execute(
                prunable_sql(statuses, "%s", "id") + " LIMIT %s FOR UPDATE SKIP LOCKED",
                (*statuses, before, before, limit),
            )
            roots = [r[0] for r in await cur.fetchall()]
            if roots:
                for sql in prune_statements(len(roots), "%s"):
                    await cur.execute(sql, roots)
        return len(roots)

    async def count_prunable(self, before: float, statuses: Sequence[str]) -> int:
        rows = await self.db.select(
            prunable_sql(statuses, "%s", "count(*)"), (*statuses, before, before)
        )
        return int(rows[0][0])

    @retried
    async def cancel_run(self, run_id: str) -> int:
        async with self.db.transaction() as cur:
            await cur.execute("SELECT 1 FROM flowz_executions WHERE id = %s", (run_id,))
            if await cur.fetchone() is None:
                raise RunNotFoundError(f"no run with id {run_id!r} at {self.db.safe_url()}")
            await cur.execute(
                f"UPDATE flowz_executions SET status = 'cancelled', finished_at = {_NOW}, "
                f"updated_at = {_NOW}, {LEASE_CLEARED} "
                f"WHERE root_id = %s AND status NOT IN ({TERMINAL_SQL})",
                (run_id,),
            )
            cancelled = cur.rowcount
            await self._announce(cur)
        return cancelled

    @retried
    async def retry_run(self, run_id: str) -> bool:
        async with self.db.transaction() as cur:
            await cur.execute(
                "SELECT status FROM flowz_executions WHERE id = %s FOR UPDATE", (run_id,)
            )
            found = await cur.fetchone()
            if found is None:
                raise RunNotFoundError(f"no run with id {run_id!r} at {self.db.safe_url()}")
            if found[0] != "failed":
                return False
            await cur.execute(
                # Failed ones, and those their failure cancelled.
                "SELECT id FROM flowz_executions WHERE root_id = %s "
                "AND status IN ('failed', 'cancelled')",
                (run_id,),
            )
            failed = [r[0] for r in await cur.fetchall()]
            await cur.execute(
                "DELETE FROM flowz_journal WHERE execution_id = ANY(%s) "
                "AND status IN ('failed', 'retrying')",
                (failed,),
            )
            await cur.execute(
                "UPDATE flowz_executions SET status = 'pending', attempt = 0, error = NULL, "
                "output = NULL, finished_at = NULL, wait_position = NULL, wait_count = 0, "
                f"awaited_at = NULL, run_at = {_NOW}, updated_at = {_NOW} WHERE id = ANY(%s)",
                (failed,),
            )
            await self._announce(cur)
        return True

    # -- worker side --------------------------------------------------------
    async def claim(
        self, worker_id: str, names: Sequence[str], queue: str, limit: int, lease_seconds: float
    ) -> list[Claim]:
        if not names or limit <= 0:
            return []
        token = uuid.uuid4().hex
        # One statement (autocommit): a single round trip.
        rows = await self.db.select(
            "WITH picked AS (SELECT id, started_at FROM flowz_executions "
            "WHERE status = 'pending' AND queue = %s AND name = ANY(%s) "
            f"AND run_at <= {_NOW} {CLAIM_ORDER} LIMIT %s "
            "FOR UPDATE SKIP LOCKED) "
            "UPDATE flowz_executions e SET status = 'running', claim_token = %s, "
            f"lease_owner = %s, lease_expires_at = {_NOW} + %s, updated_at = {_NOW}, "
            f"started_at = coalesce(e.started_at, {_NOW}), "
            "attempt = CASE WHEN e.attempt = 0 THEN 1 ELSE e.attempt END "
            "FROM picked WHERE e.id = picked.id "
            f"RETURNING {', '.join('e.' + c for c in _COLUMNS.split(', '))}, "
            f"picked.started_at IS NOT NULL, {_NOW}",
            (queue, list(names), limit, token, worker_id, lease_seconds),
        )
        claims = [
            Claim(execution_row(r), Fence(r[0], token), resumed=r[-2], db_now=r[-1]) for r in rows
        ]
        claims.sort(key=lambda c: (-c.execution.priority, c.execution.run_at))
        return claims

    async def next_due_in(
        self, names: Sequence[str], queue: str, also: float | None = None
    ) -> float | None:
        rows = await self.db.select(
            f"SELECT least(min(run_at), %s::float8) - {_NOW} FROM flowz_executions "
            "WHERE status = 'pending' AND queue = %s AND name = ANY(%s)",
            (also, queue, list(names)),
        )
        return None if rows[0][0] is None else max(0.0, float(rows[0][0]))

    async def claim_limited(
        self, worker_id: str, names: Sequence[str], queue: str, limit: int, lease_seconds: float
    ) -> tuple[list[Claim], float | None]:
        if not names or limit <= 0:
            return [], None
        token = uuid.uuid4().hex
        running_sql, trim_sql, count_sql = queue_counts_sql("%s")
        async with self.db.transaction() as cur:
            # The queue's row lock serialises its claims: no two see the same room.
            await cur.execute(
                f"SELECT {QUEUE_COLUMNS}, {_NOW} FROM flowz_queues WHERE name = %s FOR UPDATE",
                (queue,),
            )
            found = await cur.fetchone()
            if found is None:
                limits, now = QueueLimits(queue), await self._now(cur)
            else:
                limits, now = QueueLimits(*found[:-1]), found[-1]
            await cur.execute(running_sql, (queue,))
            running = {k: n for k, n in await cur.fetchall()}
            starts, oldest = 0, None
            if limits.rate_limit is not None and limits.rate_period is not None:
                await cur.execute(trim_sql, (queue, now - limits.rate_period))
                await cur.execute(count_sql, (queue,))
                starts, oldest = await cur.fetchone()  # type: ignore[misc]
            split = limits.per_partition is not None
            await cur.execute(
                limited_candidates_sql("%s", "name = ANY(%s)", split),
                [
                    queue,
                    now,
                    list(names),
                    *([queue, limits.per_partition] if split else []),
                    limit + (100 if split else 0),
                ],
            )
            candidates = await cur.fetchall()
            taken = admit(limits, limit, running, starts, candidates)
            rows: list[Any] = []
            if taken:
                ids = [c[0] for c in taken]
                await cur.execute(
                    f"UPDATE flowz_executions SET {CLAIMED.format(p='%s')} "
                    f"WHERE id = ANY(%s) AND status = 'pending' RETURNING {_COLUMNS}",
                    (token, worker_id, now + lease_seconds, now, now, ids),
                )
                rows = await cur.fetchall()
                if limits.rate_limit is not None:
                    await cur.executemany(
                        RATE_INSERT.format(p="%s"), [(queue, now, i) for i in ids]
                    )
        resumed = {c[0] for c in taken if c[2] is not None}
        executions = sorted((execution_row(r) for r in rows), key=lambda e: (-e.priority, e.run_at))
        claims = [
            Claim(e, Fence(e.id, token), resumed=e.id in resumed, db_now=now) for e in executions
        ]
        return claims, rate_wait(limits, len(candidates), len(taken), starts, oldest, now)

    @retried
    async def define_queues(self, queues: Sequence[QueueLimits]) -> None:
        async with self.db.transaction() as cur:
            now = await self._now(cur)
            await cur.executemany(
                QUEUE_UPSERT.format(p="%s"), [(*dataclasses.astuple(q), now) for q in queues]
            )

    async def list_queues(self) -> list[QueueRow]:
        defined = {r[0]: QueueLimits(*r) for r in await self.db.select(QUEUES_DEFINED, ())}
        used = await self.db.select(QUEUES_IN_USE, ())
        out = []
        for name in sorted({*defined, *(r[0] for r in used)}):
            limits = defined.get(name, QueueLimits(name))
            period = limits.rate_period or 0.0
            rows = await self.db.select(queue_load_sql("%s", _NOW), (name, name, name, period))
            running, waiting, recent = rows[0]
            out.append(QueueRow(limits, running, waiting, recent if period else 0))
        return out

    @retried
    async def define_schedules(self, schedules: Sequence[ScheduleRow]) -> None:
        async with self.db.transaction() as cur:
            now = await self._now(cur)
            await cur.executemany(
                SCHEDULE_UPSERT.format(p="%s"),
                [(s.name, s.cron, s.timezone, s.catch_up, now) for s in schedules],
            )

    async def list_schedules(self) -> list[ScheduleRow]:
        rows = await self.db.select(
            f"SELECT {SCHEDULE_COLUMNS} FROM flowz_schedules ORDER BY name", ()
        )
        return [ScheduleRow(n, c, tz, cu, bool(p), lt) for n, c, tz, cu, p, lt in rows]

    @retried
    async def pause_schedule(self, name: str, paused: bool) -> bool:
        cur = await self.db.execute(
            f"UPDATE flowz_schedules SET paused = %s, updated_at = {_NOW} WHERE name = %s",
            (int(paused), name),
        )
        return cur.rowcount == 1

    @retried
    async def tick_schedule(self, name: str, tick: float, run: NewExecution | None) -> bool:
        async with self.db.transaction() as cur:
            await cur.execute(
                f"UPDATE flowz_schedules SET last_tick = %s, updated_at = {_NOW} "
                "WHERE name = %s AND (last_tick IS NULL OR last_tick < %s)",
                (tick, name, tick),
            )
            if cur.rowcount != 1:
                return False
            if run is not None:
                await self._insert_executions(cur, [run])
                await self._announce(cur)
        return True

    @retried
    async def register_worker(
        self,
        worker_id: str,
        host: str,
        pid: int,
        queue: str = "default",
        names: Sequence[str] = (),
    ) -> None:
        await self.db.execute(
            "INSERT INTO flowz_workers (id, host, pid, started_at, heartbeat_at, queue, names) "
            f"VALUES (%s, %s, %s, {_NOW}, {_NOW}, %s, %s) ON CONFLICT (id) DO UPDATE "
            "SET heartbeat_at = excluded.heartbeat_at, queue = excluded.queue, "
            "names = excluded.names",
            (worker_id, host, pid, queue, dumps(list(names))),
        )

    @retried
    async def heartbeat(
        self, worker_id: str, lease_seconds: float, running: Sequence[str]
    ) -> set[str]:
        async with self.db.transaction() as cur:
            await cur.execute(
                f"UPDATE flowz_workers SET heartbeat_at = {_NOW} WHERE id = %s", (worker_id,)
            )
            await cur.execute(
                f"UPDATE flowz_executions SET lease_expires_at = {_NOW} + %s "
                "WHERE lease_owner = %s AND status = 'running' AND id = ANY(%s) "
                "RETURNING id",
                (lease_seconds, worker_id, list(running)),
            )
            return {r[0] for r in await cur.fetchall()}

    async def expire(self) -> int:
        where = EXPIRED.format(p=_NOW)
        if not await self.db.select(f"SELECT 1 {where} LIMIT 1", ()):
            return 0
        async with self.db.transaction() as cur:
            await cur.execute(
                f"UPDATE flowz_executions SET status = 'pending', run_at = {_NOW}, "
                f"updated_at = {_NOW}, wait_position = NULL, wait_count = 0 "
                f"WHERE id IN (SELECT id {where} FOR UPDATE SKIP LOCKED)"
            )
            woken = cur.rowcount
            if woken:
                await self._announce(cur)
        return woken

    async def lost(self, worker_id: str, running: Sequence[str]) -> set[str]:
        held = await self.db.select(
            "SELECT id FROM flowz_executions "
            "WHERE lease_owner = %s AND status = 'running' AND id = ANY(%s)",
            (worker_id, list(running)),
        )
        return set(running) - {r[0] for r in held}

    @retried
    async def deregister_worker(self, worker_id: str) -> None:
        async with self.db.transaction() as cur:
            await cur.execute(
                f"UPDATE flowz_executions SET status = 'pending', {LEASE_CLEARED}, "
                f"updated_at = {_NOW} WHERE lease_owner = %s AND status = 'running'",
                (worker_id,),
            )
            if cur.rowcount:
                await self._announce(cur)
            await cur.execute("DELETE FROM flowz_workers WHERE id = %s", (worker_id,))

    async def list_workers(self, host: str | None = None) -> list[WorkerRow]:
        sql = WORKER_SELECT
        rows = await (
            self.db.select(sql + " WHERE host = %s", (host,)) if host else self.db.select(sql, ())
        )
        return [worker_row(r) for r in rows]

    @retried
    async def reap(self, dead_worker_ids: Sequence[str]) -> int:
        async with self.db.transaction() as cur:
            await cur.execute(
                f"UPDATE flowz_executions SET status = 'pending', {LEASE_CLEARED}, "
                f"updated_at = {_NOW} WHERE status = 'running' AND (lease_expires_at < {_NOW} "
                "OR lease_owner = ANY(%s))",
                (list(dead_worker_ids),),
            )
            reaped = cur.rowcount
            await cur.execute(
                "DELETE FROM flowz_workers WHERE id = ANY(%s)", (list(dead_worker_ids),)
            )
            if reaped:
                await self._announce(cur)
        return reaped

    # -- engine side --------------------------------------------------------
    async def read_journal(self, execution_id: str) -> dict[int, JournalEntry]:
        rows = await self.db.select(
            f"SELECT {JOURNAL_SELECT} FROM flowz_journal WHERE execution_id = %s",
            (execution_id,),
        )
        return {r[0]: journal_entry(r) for r in rows}

    async def append_journal(self, fence: Fence, entry: JournalEntry) -> None:
        # The hot path of every inline step. Concurrent executions' entries of one loop
        # turn share one statement (one commit); each caller returns once it is committed.
        await self._appending.submit(Append(fence, entry))

    async def _flush_appends(self, batch: list[Pending[Append]]) -> None:
        if len(batch) == 1:
            await self.db.retry(lambda: self._append_one(batch[0]))
        else:
            await self.db.retry(lambda: self._append_many(batch))

    async def _append_one(self, pending: Pending[Append]) -> None:
        # Fence and write in one statement. The fence's row lock holds off a reaper or a
        # new claim until this write commits.
        fence = pending.item.fence
        cur = await self.db.execute(
            f"WITH fenced AS ({_FENCE} RETURNING id) "
            f"INSERT INTO flowz_journal ({JOURNAL_COLUMNS}) "
            "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s FROM fenced "
            f"{_JOURNAL_UPSERT}",
            (
                fence.execution_id,
                fence.token,
                *journal_params(fence.execution_id, pending.item.entry),
            ),
        )
        pending.failure = None if cur.rowcount == 1 else LeaseLost(fence.execution_id)

    async def _append_many(self, batch: list[Pending[Append]]) -> None:
        # In execution id order, so that two transactions locking the same executions
        # take them in the same order. A write's fence either holds (its entry is
        # written: the statement writes every entry of a valid fence) or not.
        entries = {
            (p.item.fence, p.item.entry.position): p
            for p in sorted(batch, key=lambda p: p.item.fence.execution_id)
        }
        columns: list[list[Any]] = [[] for _ in range(11)]
        for pending in entries.values():
            fence = pending.item.fence
            for column, value in zip(
                columns,
                (fence.token, *journal_params(fence.execution_id, pending.item.entry)),
                strict=True,
            ):
                column.append(value)
        cur = await self.db.execute(_JOURNAL_BATCH, columns)
        valid = {Fence(row[0], row[1]) for row in await cur.fetchall()}
        for pending in batch:
            fence = pending.item.fence
            pending.failure = None if fence in valid else LeaseLost(fence.execution_id)

    async def schedule_children(
        self, fence: Fence, entries: Sequence[JournalEntry], children: Sequence[NewExecution]
    ) -> None:
        await self._schedule_children(fence, entries, children)
        await self._note_inserted(len(children))

    @retried
    async def _schedule_children(
        self, fence: Fence, entries: Sequence[JournalEntry], children: Sequence[NewExecution]
    ) -> None:
        async with self.db.transaction() as cur:
            await self._fence(cur, fence)
            await self._insert_entries(cur, fence.execution_id, entries)
            await self._insert_executions(cur, children)
            await self._announce(cur)

    async def wait_for_children(
        self,
        fence: Fence,
        wait_position: int,
        positions: Sequence[int],
        entries: Sequence[JournalEntry] = (),
        children: Sequence[NewExecution] = (),
        first: bool = False,
    ) -> bool:
        suspended = await self._wait_for_children(
            fence, wait_position, positions, entries, children, first
        )
        await self._note_inserted(len(children))
        return suspended

    @retried
    async def _wait_for_children(
        self,
        fence: Fence,
        wait_position: int,
        positions: Sequence[int],
        entries: Sequence[JournalEntry],
        children: Sequence[NewExecution],
        first: bool,
    ) -> bool:
        async with self.db.transaction() as cur:
            # Lock the parent first: a child's completion locks child then parent, and
            # waits here for our commit, so it sees awaited_at and counts down after us.
            await self._fence(cur, fence)
            await self._insert_entries(cur, fence.execution_id, entries)
            await self._insert_executions(cur, children)
            if first:
                await cur.execute(
                    "SELECT 1 FROM flowz_executions WHERE parent_id = %s "
                    f"AND position = ANY(%s) AND status IN ({TERMINAL_SQL}) LIMIT 1",
                    (fence.execution_id, list(positions)),
                )
                if await cur.fetchone():
                    return False
            await cur.execute(
                "UPDATE flowz_executions SET awaited_at = %s WHERE parent_id = %s "
                f"AND position = ANY(%s) AND status NOT IN ({TERMINAL_SQL})",
                (wait_position, fence.execution_id, list(positions)),
            )
            waiting_on = cur.rowcount
            if waiting_on:
                await cur.execute(
                    "UPDATE flowz_executions SET status = 'waiting', wait_position = %s, "
                    f"wait_count = %s, {LEASE_CLEARED} WHERE id = %s",
                    (wait_position, 1 if first else waiting_on, fence.execution_id),
                )
            if children:
                await self._announce(cur)
        return waiting_on > 0

    async def child_results(self, parent_id: str, positions: Sequence[int]) -> list[ExecutionRow]:
        rows = await self.db.select(
            f"SELECT {_COLUMNS} FROM flowz_executions WHERE parent_id = %s "
            "AND position = ANY(%s) ORDER BY position, child_index",
            (parent_id, list(positions)),
        )
        return [execution_row(r) for r in rows]

    async def child_outcomes(
        self, parent_id: str, positions: Sequence[int], after: tuple[int, int] | None, limit: int
    ) -> list[ChildOutcome]:
        sql, params = child_outcomes_sql(
            "%s", "position = ANY(%s)", parent_id, list(positions), after, limit
        )
        return [child_outcome(r) for r in await self.db.select(sql, params)]

    @retried
    async def cancel_child(self, fence: Fence, entry: JournalEntry, child_id: str) -> None:
        async with self.db.transaction() as cur:
            await self._fence(cur, fence)
            await cur.execute(
                f"UPDATE flowz_executions SET status = 'cancelled', finished_at = {_NOW}, "
                f"updated_at = {_NOW}, {LEASE_CLEARED} WHERE id = %s AND parent_id = %s "
                f"AND status NOT IN ({TERMINAL_SQL})",
                (child_id, fence.execution_id),
            )
            await cur.execute(_CANCEL_DESCENDANTS, (child_id,))
            await self._insert_entries(cur, fence.execution_id, [entry])
            await self._announce(cur)

    @retried
    async def suspend_until(self, fence: Fence, run_at: float, entry: JournalEntry | None) -> None:
        async with self.db.transaction() as cur:
            await self._fence(cur, fence)
            if entry is not None:
                await self._insert_entries(cur, fence.execution_id, [entry])
            await cur.execute(
                f"UPDATE flowz_executions SET status = 'pending', run_at = %s, {LEASE_CLEARED} "
                "WHERE id = %s",
                (run_at, fence.execution_id),
            )
            await self._announce(cur)

    @retried
    async def retry_later(self, fence: Fence, run_at: float, error: JSON) -> None:
        async with self.db.transaction() as cur:
            await self._fence(cur, fence)
            await cur.execute(
                "UPDATE flowz_executions SET status = 'pending', run_at = %s, "
                f"attempt = attempt + 1, error = %s, {LEASE_CLEARED} WHERE id = %s",
                (run_at, dumps(error), fence.execution_id),
            )
            await self._announce(cur)

    async def finish(self, fence: Fence, status: str, output: JSON, error: JSON) -> None:
        await self._finishing.submit(Finish(fence, status, output, error))

    async def _flush_finishes(self, batch: list[Pending[Finish]]) -> None:
        await self.db.retry(lambda: self._finish_batch(batch))

    async def _finish_batch(self, batch: list[Pending[Finish]]) -> None:
        batch = sorted(batch, key=lambda p: p.item.fence.execution_id)
        async with self.db.transaction() as cur:
            # Lock order, parents before children and each in id order, is the same as a
            # parent's wait_for_children takes (itself, then its children): no deadlock.
            await cur.execute(
                "SELECT 1 FROM flowz_executions WHERE id IN (SELECT parent_id FROM "
                "flowz_executions WHERE id = ANY(%s)) ORDER BY id FOR UPDATE",
                ([p.item.fence.execution_id for p in batch],),
            )
            # One pipelined round trip for the whole batch.
            await cur.executemany(
                "UPDATE flowz_executions SET status = %s, output = %s, error = %s, "
                f"finished_at = {_NOW}, updated_at = {_NOW}, {LEASE_CLEARED} "
                "WHERE id = %s AND claim_token = %s AND status = 'running' "
                "RETURNING parent_id, awaited_at, kind",
                [
                    (
                        p.item.status,
                        dumps_or_none(p.item.output),
                        dumps_or_none(p.item.error),
                        p.item.fence.execution_id,
                        p.item.fence.token,
                    )
                    for p in batch
                ],
                returning=True,
            )
            # Per parent wait: how many awaited children ended, and whether one failed.
            ended: dict[tuple[str, int], list[int]] = {}
            workflows: list[str] = []
            for pending in batch:
                pending.failure = None
                done = await cur.fetchone()
                cur.nextset()
                if done is None:
                    pending.failure = LeaseLost(pending.item.fence.execution_id)
                    continue
                if done[2] == "workflow":
                    workflows.append(pending.item.fence.execution_id)
                if done[0] is not None and done[1] is not None:
                    counts = ended.setdefault((done[0], done[1]), [0, 0])
                    counts[0] += 1
                    counts[1] += pending.item.status != "succeeded"
            if workflows:
                await cur.executemany(_CANCEL_DESCENDANTS, [(w,) for w in workflows])
            if ended:
                # The last awaited child makes the parent runnable; a failure wakes it at once.
                await cur.executemany(
                    "UPDATE flowz_executions SET wait_count = wait_count - %(n)s, "
                    "status = CASE WHEN %(failed)s OR wait_count - %(n)s <= 0 THEN 'pending' "
                    "ELSE status END, "
                    f"run_at = CASE WHEN %(failed)s OR wait_count - %(n)s <= 0 THEN {_NOW} "
                    f"ELSE run_at END, updated_at = {_NOW}, "
                    # Woken once: children of that wait that end later find nothing to wake.
                    "wait_position = CASE WHEN %(failed)s OR wait_count - %(n)s <= 0 THEN NULL "
                    "ELSE wait_position END "
                    "WHERE id = %(id)s AND status = 'waiting' AND wait_position = %(at)s",
                    [
                        {"id": parent, "at": at, "n": n, "failed": failed > 0}
                        for (parent, at), (n, failed) in sorted(ended.items())
                    ],
                )
            await self._announce(cur)
        self.db.notify_local()

    # -- messages and events ---------------------------------------------------
    # Not retried after a broken connection: the send may have committed. A caller
    # that retries should give an idempotency key.
    async def send_message(
        self, run_id: str, topic: str, value: JSON, idempotency_key: str | None
    ) -> bool:
        async with self.db.transaction() as cur:
            # The execution's row lock orders sends (seq) and a send after a receive
            # that is about to suspend: the receive holds it until it commits.
            await cur.execute(
                f"SELECT kind, status, {_NOW} FROM flowz_executions WHERE id = %s FOR UPDATE",
                (run_id,),
            )
            found = await cur.fetchone()
            where = f"at {self.db.safe_url()}"
            check_message_target(run_id, found, where, ended_ok=True)
            assert found is not None
            now = float(found[2])
            if idempotency_key is not None:
                await cur.execute(
                    "SELECT 1 FROM flowz_messages WHERE run_id = %s AND idempotency_key = %s",
                    (run_id, idempotency_key),
                )
                if await cur.fetchone():
                    return False  # delivered before, even if the run has ended since
            check_message_target(run_id, found, where)
            # One statement: the message, and the receiver woken if it waits on the topic.
            message = (run_id, topic, dumps(value), idempotency_key, now, run_id)
            await cur.execute(
                f"WITH sent AS ({MESSAGE_INSERT.format(p='%s')}) {WAKE_RECEIVER.format(p='%s')}",
                (*message, now, now, run_id, run_id, topic),
            )
            if cur.rowcount:
                await self._announce(cur)
        return True

    @retried
    async def receive(
        self, fence: Fence, position: int, topic: str, deadline: float | None
    ) -> tuple[bool, JSON]:
        # Three statements, each after the last (not one CTE): the fence takes the
        # execution's row lock first, so the look after it (a statement of its own,
        # with its own snapshot) sees a send that held the lock. Pipelined: BEGIN, the
        # fence and the look go in one round trip, the write and COMMIT in another;
        # the server still runs each statement after the last has ended.
        async with self.db.transaction(pipelined=True) as cur:
            look = cur.connection.cursor()
            await cur.execute(f"{_FENCE} RETURNING updated_at", (fence.execution_id, fence.token))
            execution_id = fence.execution_id
            await look.execute(_RECEIVE_LOOK, (execution_id, position, execution_id, topic))
            fenced = await cur.fetchone()
            if fenced is None:
                raise LeaseLost(fence.execution_id)
            found = await look.fetchone()
            assert found is not None  # one row, always
            return await self._receive_write(
                cur, fence, position, topic, deadline, float(fenced[0]), found
            )

    async def _receive_write(
        self,
        cur: Cursor,
        fence: Fence,
        position: int,
        topic: str,
        deadline: float | None,
        now: float,
        found: Sequence[Any],
    ) -> tuple[bool, JSON]:
        """The write of a receive whose look found `found`; what the receive returns."""
        taken = None if found[0] is None else found[:2]
        message = None if found[2] is None else found[2:]
        outcome, value = receive_outcome(taken, message, deadline, now)
        if outcome == "taken":
            return True, value
        entry = journal_params(
            fence.execution_id, receive_entry(position, topic, outcome, value, deadline, now)
        )
        if outcome == "message":
            assert message is not None
            await cur.execute(
                "WITH consumed AS (UPDATE flowz_messages SET consumed_at = %s "
                "WHERE run_id = %s AND seq = %s) "
                f"{_JOURNAL_INSERT}",
                (now, fence.execution_id, message[0], *entry),
            )
            return True, value
        if outcome == "timeout":
            await cur.execute(_JOURNAL_INSERT, entry)
            return True, None
        await cur.execute(
            "WITH suspended AS (UPDATE flowz_executions SET status = %s, run_at = %s, "
            f"{LEASE_CLEARED}, updated_at = %s WHERE id = %s) {_JOURNAL_INSERT}",
            (
                "waiting" if deadline is None else "pending",
                now if deadline is None else deadline,
                now,
                fence.execution_id,
                *entry,
            ),
        )
        if deadline is not None:
            await self._announce(cur)  # idle workers learn of the new due time
        return False, None

    @retried
    async def set_event(self, fence: Fence, entry: JournalEntry, name: str, value: JSON) -> None:
        async with self.db.transaction() as cur:
            await self._fence(cur, fence)
            now = await self._now(cur)
            await cur.execute(
                EVENT_UPSERT.format(p="%s"), (fence.execution_id, name, dumps(value), now)
            )
            await self._insert_entries(cur, fence.execution_id, [entry])
            await self._announce(cur)

    @retried
    async def write_stream(
        self, fence: Fence, entry: JournalEntry, name: str, value: JSON, closed: bool
    ) -> None:
        async with self.db.transaction() as cur:
            await self._fence(cur, fence)  # the row lock orders the stream's seq
            now = await self._now(cur)
            run_id = fence.execution_id
            taken = await self._journaled(cur, run_id, entry.position)
            if taken is None:  # a retried transaction must not append twice
                await cur.execute(
                    STREAM_APPEND.format(p="%s"),
                    (run_id, name, dumps(value), int(closed), now, run_id, name),
                )
                await self._insert_entries(cur, run_id, [entry])
            await self._announce(cur)

    async def read_stream(self, run_id: str, name: str, after: int) -> list[StreamItem]:
        rows = await self.db.select(STREAM_READ.format(p="%s"), (run_id, name, after))
        return [StreamItem(seq, loads(value), bool(closed)) for seq, value, closed in rows]

    @staticmethod
    async def _journaled(cur: Cursor, execution_id: str, position: int) -> Any:
        """The (status, output) of the journal entry at `position`, if any."""
        await cur.execute(
            "SELECT status, output FROM flowz_journal WHERE execution_id = %s AND position = %s",
            (execution_id, position),
        )
        return await cur.fetchone()

    async def get_events(self, run_id: str) -> dict[str, JSON]:
        rows = await self.db.select(
            "SELECT name, value FROM flowz_events WHERE run_id = %s", (run_id,)
        )
        return {name: loads(value) for name, value in rows}

    @staticmethod
    async def _now(cur: Cursor) -> float:
        """The database's clock, in epoch seconds."""
        await cur.execute(f"SELECT {_NOW}")
        found = await cur.fetchone()
        assert found is not None
        return float(found[0])

    @retried
    async def release(self, fence: Fence) -> None:
        async with self.db.transaction() as cur:
            await cur.execute(
                f"UPDATE flowz_executions SET status = 'pending', {LEASE_CLEARED}, "
                f"updated_at = {_NOW} WHERE id = %s AND claim_token = %s AND status = 'running'",
                (fence.execution_id, fence.token),
            )
            await self._announce(cur)
