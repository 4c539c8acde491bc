"""SqliteStore: the embedded default. WAL, BEGIN IMMEDIATE, short synchronous calls on the loop.

Each method runs its whole transaction in one synchronous call: no await inside a
transaction, so concurrent tasks never interleave in one, and no thread hop per
statement (perf-baseline.md: aiosqlite costs 2-7x a plain sqlite3 call here).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from .._clock import Clock
from .._serde import dumps, loads
from .._types import JSON
from ..errors import (
    RunNotFoundError,
    StoreError,
    StoreNotWritableError,
    StoreUnavailableError,
)
from ._batch import Append, Finish, GroupCommit, NewRun, Pending
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
    NEXT_MESSAGE,
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
    ChangeSignal,
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

__all__ = ["SqliteStore"]


_COLUMNS = EXECUTION_COLUMNS
_CANCEL_DESCENDANTS = cancel_descendants_sql("?", "?")  # parameters: id, now, now
_CHUNK = 500  # bound parameters per IN (...) list
_JOURNAL_INSERT = (
    f"INSERT OR REPLACE INTO flowz_journal ({JOURNAL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
# How often an idle worker checks whether another process committed (PRAGMA data_version is cheap).
_OTHER_PROCESS_POLL = 0.05


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def path_from_url(url: str) -> Path:
    """`sqlite:///rel/path.db` is relative to the working directory, `sqlite:////abs` absolute."""
    if not url.startswith("sqlite:///"):
        raise StoreUnavailableError(
            f"SQLite URL {url!r} is not valid: write sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    return Path(url.removeprefix("sqlite:///"))


class SqliteStore:
    """The embedded SQLite store: one file, shared safely by the processes of one host.

    Examples:
        >>> store = SqliteStore("/tmp/flowz-doc.db")  # doctest: +SKIP
        >>> await store.migrate()  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 30.0,
        clock: Clock | None = None,
    ):
        self.path = Path(path)
        self.clock = clock or Clock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, timeout=busy_timeout, check_same_thread=False
            )
            self._enable_wal(busy_timeout)
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            if not self._writable():
                raise StoreNotWritableError(self._read_only_message(exc)) from exc
            raise StoreUnavailableError(
                f"cannot open the SQLite database at {str(self.path)!r}: {exc}. Check that the "
                "folder exists and is writable, or point FLOWZ_DATABASE_URL elsewhere."
            ) from exc
        self._changes = ChangeSignal()  # commits made through this store
        self._finishing = GroupCommit[Finish](self._flush_finishes)
        self._appending = GroupCommit[Append](self._flush_appends)
        self._creating = GroupCommit[NewRun](self._flush_creates)

    def _enable_wal(self, busy_timeout: float) -> None:
        # Switching a new file to WAL needs it to itself, and SQLite does not wait for that
        # (no busy handler): processes opening a new database together retry here.
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    # -- plumbing -----------------------------------------------------------
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        try:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            raise

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StoreError:
        code = getattr(exc, "sqlite_errorname", "")
        if code.startswith("SQLITE_FULL"):
            return StoreNotWritableError(
                f"the disk holding the SQLite database {str(self.path)!r} is full (SQLite: "
                f"{exc}); the write was rolled back and nothing stored before it is lost. "
                "Free space, then resume the run by its id (a worker, or flowz.run(..., id=...))"
            )
        if code.startswith("SQLITE_READONLY") or not self._writable():
            return StoreNotWritableError(self._read_only_message(exc))
        return StoreError(f"SQLite error on {str(self.path)!r}: {exc}")

    def _writable(self) -> bool:
        """Whether this process may write the database file and its folder (the WAL files)."""
        folder = self.path.parent
        return os.access(folder, os.W_OK) and (
            not self.path.exists() or os.access(self.path, os.W_OK)
        )

    def _read_only_message(self, exc: BaseException) -> str:
        return (
            f"the SQLite database {str(self.path)!r} is read-only (SQLite: {exc}); nothing "
            "stored was changed. SQLite writes the file and its -wal and -shm files beside "
            "it: make the file and its folder writable, or point FLOWZ_DATABASE_URL elsewhere"
        )

    def _notify(self) -> None:
        self._changes.notify()

    def _fence(self, cur: sqlite3.Cursor, fence: Fence) -> float:
        """Check ownership and stamp updated_at, under the write lock; the time used."""
        now = self.clock.now()
        if not self._fenced(cur, fence, now):
            raise LeaseLost(fence.execution_id)
        return now

    def _fenced(self, cur: sqlite3.Cursor, fence: Fence, now: float | None = None) -> bool:
        """Whether this fence still holds its execution (then stamped updated_at)."""
        cur.execute(
            "UPDATE flowz_executions SET updated_at = ? "
            "WHERE id = ? AND claim_token = ? AND status = 'running'",
            (self.clock.now() if now is None else now, fence.execution_id, fence.token),
        )
        return cur.rowcount == 1

    @staticmethod
    def _insert_entries(
        cur: sqlite3.Cursor, execution_id: str, entries: Sequence[JournalEntry]
    ) -> None:
        cur.executemany(_JOURNAL_INSERT, [journal_params(execution_id, e) for e in entries])

    @staticmethod
    def _insert_executions(
        cur: sqlite3.Cursor, executions: Sequence[NewExecution], now: float
    ) -> int:
        cur.executemany(
            "INSERT OR IGNORE INTO flowz_executions (id, root_id, parent_id, position, "
            "child_index, kind, name, input, status, attempt, max_attempts, run_at, queue, "
            "priority, deadline, partition_key, trace_context, wait_count, created_at, "
            "updated_at) VALUES (?,?,?,?,?,?,?,?,'pending',0,?,?,?,?,?,?,?,0,?,?)",
            # A generator: a gather of 100,000 never holds all its rows' values at once.
            (
                (*p[:9], now if p[9] is None else p[9], *p[10:], now, now)
                for p in map(new_execution_params, executions)
            ),
        )
        return cur.rowcount

    # -- lifecycle ----------------------------------------------------------
    async def schema_version(self) -> int | None:
        try:
            found = self._db.execute("SELECT max(version) FROM flowz_schema").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise self._error(exc) from exc
        return None if found is None else int(found)

    async def migrate(self) -> list[str]:
        from ._migrate import plan

        with self._tx() as cur:  # the write lock: one process migrates at a time
            exists = cur.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'flowz_schema'"
            ).fetchone()
            found = (
                cur.execute("SELECT max(version) FROM flowz_schema").fetchone()[0]
                if exists
                else None
            )
            steps = plan(found, "sqlite", repr(str(self.path)))
            for step in steps:
                for statement in step.statements:
                    cur.execute(statement)
                cur.execute("INSERT INTO flowz_schema (version) VALUES (?)", (step.version,))
        return [f"v{step.version}: {step.description}" for step in steps]

    async def aclose(self) -> None:
        self._db.close()

    def wall_now(self) -> float:
        return self.clock.now()

    def change_mark(self) -> object:
        return self._mark()

    def _mark(self) -> tuple[int, int]:
        # This store's own commits, and (data_version) other connections' commits.
        return (self._changes.generation, int(self._read("PRAGMA data_version")[0][0]))

    async def wait_for_change(self, timeout: float, since: object | None = None) -> None:
        deadline = time.monotonic() + timeout
        generation, seen = (
            (int(since[0]), int(since[1])) if isinstance(since, tuple) else self._mark()
        )
        if self._changes.generation != generation:
            return
        event = self._changes.event()
        while (remaining := deadline - time.monotonic()) > 0:
            if self._read("PRAGMA data_version")[0][0] != seen:
                return
            with anyio.move_on_after(min(remaining, _OTHER_PROCESS_POLL)):
                await event.wait()
                return

    # -- runs ---------------------------------------------------------------
    async def create_run(self, run: NewExecution) -> tuple[ExecutionRow, bool]:
        # Concurrent starts of one loop turn share one transaction (one fsync).
        new = NewRun(run)
        await self._creating.submit(new)
        assert new.row is not None  # filled in by the flush, or it raised
        return new.row, new.created

    async def _flush_creates(self, batch: list[Pending[NewRun]]) -> None:
        now = self.clock.now()
        with self._tx() as cur:
            for pending in batch:
                run = pending.item.run
                pending.item.created = self._insert_executions(cur, [run], now) == 1
                pending.item.row = execution_row(
                    cur.execute(
                        f"SELECT {_COLUMNS} FROM flowz_executions WHERE id = ?", (run.id,)
                    ).fetchone()
                )
        if any(p.item.created for p in batch):
            self._notify()

    async def create_runs(self, runs: Sequence[NewExecution]) -> int:
        now = self.clock.now()
        with self._tx() as cur:  # the write lock: no one inserts between insert and check
            created = self._insert_executions(cur, runs, now)
            if created < len(runs):
                # Some ids were taken: by the same runs (fine), or by others (refused, and
                # the raise rolls the batch back). The rows just inserted match themselves.
                found = [
                    row
                    for chunk in _chunks([r.id for r in runs])
                    for row in cur.execute(
                        "SELECT id, name, parent_id, input FROM flowz_executions "
                        f"WHERE id IN ({','.join('?' * len(chunk))})",
                        list(chunk),
                    ).fetchall()
                ]
                check_new_runs(runs, found)
        if created:
            self._notify()
        return created

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM flowz_executions WHERE id = ?", (execution_id,))
        return execution_row(rows[0]) if rows else None

    async def list_executions(self, root_id: str) -> list[ExecutionRow]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM flowz_executions WHERE root_id = ? "
            "ORDER BY parent_id IS NOT NULL, created_at, parent_id, position, child_index",
            (root_id,),
        )
        return [execution_row(r) for r in rows]

    async def list_runs(self, query: RunQuery) -> list[ExecutionRow]:
        sql, params = run_query_sql(query, "?", hint=True)
        return [execution_row(r) for r in self._read(sql, params)]

    async def count_runs(self, query: RunQuery) -> dict[str, int]:
        sql, params = run_counts_sql(query, "?", hint=True)
        return {str(status): int(n) for status, n in self._read(sql, params)}

    async def pending_unknown(
        self, known: Sequence[str], before: float, limit: int
    ) -> list[ExecutionRow]:
        sql = pending_unknown_sql(len(known), "?", "?")
        params = [self.clock.now(), *known, before, limit]
        return [execution_row(r) for r in self._read(sql, params)]

    async def running_by_worker(self) -> dict[str, int]:
        rows = self._read(RUNNING_BY_WORKER)
        return {str(owner): int(n) for owner, n in rows}

    async def fork_run(
        self, source_id: str, new_id: str, at: int, rerun: Sequence[str]
    ) -> ExecutionRow:
        now = self.clock.now()
        with self._tx() as cur:
            found = cur.execute(
                "SELECT kind, parent_id, status, name, input, queue, priority, partition_key "
                "FROM flowz_executions WHERE id = ?",
                (source_id,),
            ).fetchone()
            taken = cur.execute("SELECT 1 FROM flowz_executions WHERE id = ?", (new_id,))
            where = f"in {str(self.path)!r}"
            check_fork_source(source_id, found, new_id, taken.fetchone() is not None, where)
            _, _, _, name, payload, queue, priority, partition = found
            root = NewExecution(
                id=new_id, root_id=new_id, kind="workflow", name=name, input=loads(payload),
                queue=queue, priority=priority, partition_key=partition,
            )  # fmt: skip
            self._insert_executions(cur, [root], now)
            for sql, params in fork_statements(source_id, new_id, at, rerun, "?", now):
                cur.execute(sql, params)
            row = cur.execute(f"SELECT {_COLUMNS} FROM flowz_executions WHERE id = ?", (new_id,))
            created = execution_row(row.fetchone())
        self._notify()
        return created

    async def prune(self, before: float, statuses: Sequence[str], limit: int) -> int:
        with self._tx() as cur:
            roots = [
                r[0]
                for r in cur.execute(
                    prunable_sql(statuses, "?", "id", hint=True) + " LIMIT ?",
                    (*statuses, before, before, limit),
                )
            ]
            if roots:
                for sql in prune_statements(len(roots), "?"):
                    cur.execute(sql, roots)
        return len(roots)

    async def count_prunable(self, before: float, statuses: Sequence[str]) -> int:
        rows = self._read(
            prunable_sql(statuses, "?", "count(*)", hint=True), (*statuses, before, before)
        )
        return int(rows[0][0])

    async def cancel_run(self, run_id: str) -> int:
        now = self.clock.now()
        with self._tx() as cur:
            if (
                cur.execute("SELECT 1 FROM flowz_executions WHERE id = ?", (run_id,)).fetchone()
                is None
            ):
                raise RunNotFoundError(f"no run with id {run_id!r} in {str(self.path)!r}")
            cur.execute(
                "UPDATE flowz_executions SET status = 'cancelled', finished_at = ?, "
                f"updated_at = ?, {LEASE_CLEARED} "
                f"WHERE root_id = ? AND status NOT IN ({TERMINAL_SQL})",
                (now, now, run_id),
            )
            cancelled = cur.rowcount
        self._notify()
        return cancelled

    async def retry_run(self, run_id: str) -> bool:
        now = self.clock.now()
        with self._tx() as cur:
            found = cur.execute(
                "SELECT status FROM flowz_executions WHERE id = ?", (run_id,)
            ).fetchone()
            if found is None:
                raise RunNotFoundError(f"no run with id {run_id!r} in {str(self.path)!r}")
            if found[0] != "failed":
                return False
            failed = [
                r[0]
                for r in cur.execute(
                    # Failed ones, and those their failure cancelled.
                    "SELECT id FROM flowz_executions WHERE root_id = ? "
                    "AND status IN ('failed', 'cancelled')",
                    (run_id,),
                )
            ]
            for chunk in _chunks(failed):
                marks = ",".join("?" * len(chunk))
                cur.execute(
                    f"DELETE FROM flowz_journal WHERE execution_id IN ({marks}) "
                    "AND status IN ('failed', 'retrying')",
                    chunk,
                )
                cur.execute(
                    "UPDATE flowz_executions SET status = 'pending', attempt = 0, error = NULL, "
                    "output = NULL, finished_at = NULL, wait_position = NULL, wait_count = 0, "
                    "awaited_at = NULL, "
                    f"run_at = ?, updated_at = ? WHERE id IN ({marks})",
                    (now, now, *chunk),
                )
        self._notify()
        return True

    # -- worker side --------------------------------------------------------
    async def claim(
        self, worker_id: str, names: Sequence[str], queue: str, limit: int, lease_seconds: float
    ) -> list[Claim]:
        if not names or limit <= 0:
            return []
        now = self.clock.now()
        token = uuid.uuid4().hex
        marks = ",".join("?" * len(names))
        with self._tx() as cur:
            rows = cur.execute(
                f"UPDATE flowz_executions SET {CLAIMED.format(p='?')} "
                "WHERE id IN (SELECT id FROM flowz_executions WHERE status = 'pending' "
                f"AND queue = ? AND run_at <= ? AND name IN ({marks}) "
                f"{CLAIM_ORDER} LIMIT ?) "
                f"RETURNING {_COLUMNS}",
                (token, worker_id, now + lease_seconds, now, now, queue, now, *names, limit),
            ).fetchall()
        executions = sorted((execution_row(r) for r in rows), key=lambda e: (-e.priority, e.run_at))
        return [
            Claim(e, Fence(e.id, token), resumed=e.started_at != now, db_now=now)
            for e in executions
        ]

    async def claim_limited(
        self, worker_id: str, names: Sequence[str], queue: str, limit: int, lease_seconds: float
    ) -> tuple[list[Claim], float | None]:
        if not names or limit <= 0:
            return [], None
        now = self.clock.now()
        token = uuid.uuid4().hex
        running_sql, trim_sql, count_sql = queue_counts_sql("?")
        marks = ",".join("?" * len(names))
        # BEGIN IMMEDIATE: the write lock serialises this claim with every other one.
        with self._tx() as cur:
            found = cur.execute(
                f"SELECT {QUEUE_COLUMNS} FROM flowz_queues WHERE name = ?", (queue,)
            ).fetchone()
            limits = QueueLimits(*found) if found else QueueLimits(queue)
            running = dict(cur.execute(running_sql, (queue,)).fetchall())
            starts, oldest = 0, None
            if limits.rate_limit is not None and limits.rate_period is not None:
                cur.execute(trim_sql, (queue, now - limits.rate_period))
                starts, oldest = cur.execute(count_sql, (queue,)).fetchone()
            split = limits.per_partition is not None
            candidates = cur.execute(
                limited_candidates_sql("?", f"name IN ({marks})", split),
                [
                    queue,
                    now,
                    *names,
                    *([queue, limits.per_partition] if split else []),
                    limit + (100 if split else 0),
                ],
            ).fetchall()
            taken = admit(limits, limit, running, starts, candidates)
            rows = []
            if taken:
                ids = [c[0] for c in taken]
                rows = cur.execute(
                    f"UPDATE flowz_executions SET {CLAIMED.format(p='?')} "
                    f"WHERE id IN ({','.join('?' * len(ids))}) AND status = 'pending' "
                    f"RETURNING {_COLUMNS}",
                    (token, worker_id, now + lease_seconds, now, now, *ids),
                ).fetchall()
                if limits.rate_limit is not None:
                    cur.executemany(RATE_INSERT.format(p="?"), [(queue, now, i) for i in ids])
        resumed = {c[0] for c in taken if c[2] is not None}
        executions = sorted((execution_row(r) for r in rows), key=lambda e: (-e.priority, e.run_at))
        claims = [
            Claim(e, Fence(e.id, token), resumed=e.id in resumed, db_now=now) for e in executions
        ]
        return claims, rate_wait(limits, len(candidates), len(taken), starts, oldest, now)

    async def define_queues(self, queues: Sequence[QueueLimits]) -> None:
        now = self.clock.now()
        with self._tx() as cur:
            cur.executemany(
                QUEUE_UPSERT.format(p="?"),
                [(*dataclasses.astuple(q), now) for q in queues],
            )

    async def list_queues(self) -> list[QueueRow]:
        now = self.clock.now()
        defined = {r[0]: QueueLimits(*r) for r in self._read(QUEUES_DEFINED)}
        out = []
        for name in sorted({*defined, *(r[0] for r in self._read(QUEUES_IN_USE))}):
            limits = defined.get(name, QueueLimits(name))
            period = limits.rate_period or 0.0
            running, waiting, recent = self._read(
                queue_load_sql("?", "?"), (name, name, now, name, now, period)
            )[0]
            out.append(QueueRow(limits, running, waiting, recent if period else 0))
        return out

    async def define_schedules(self, schedules: Sequence[ScheduleRow]) -> None:
        now = self.clock.now()
        with self._tx() as cur:
            cur.executemany(
                SCHEDULE_UPSERT.format(p="?"),
                [(s.name, s.cron, s.timezone, s.catch_up, now) for s in schedules],
            )

    async def list_schedules(self) -> list[ScheduleRow]:
        rows = self._read(f"SELECT {SCHEDULE_COLUMNS} FROM flowz_schedules ORDER BY name")
        return [ScheduleRow(n, c, tz, cu, bool(p), lt) for n, c, tz, cu, p, lt in rows]

    async def pause_schedule(self, name: str, paused: bool) -> bool:
        with self._tx() as cur:
            cur.execute(
                "UPDATE flowz_schedules SET paused = ?, updated_at = ? WHERE name = ?",
                (int(paused), self.clock.now(), name),
            )
            return cur.rowcount == 1

    async def tick_schedule(self, name: str, tick: float, run: NewExecution | None) -> bool:
        now = self.clock.now()
        with self._tx() as cur:
            cur.execute(
                "UPDATE flowz_schedules SET last_tick = ?, updated_at = ? WHERE name = ? "
                "AND (last_tick IS NULL OR last_tick < ?)",
                (tick, now, name, tick),
            )
            if cur.rowcount != 1:
                return False
            if run is not None:
                self._insert_executions(cur, [run], now)
        if run is not None:
            self._notify()
        return True

    async def next_due_in(
        self, names: Sequence[str], queue: str, also: float | None = None
    ) -> float | None:
        due, running = None, False
        if names:
            marks = ",".join("?" * len(names))
            due, running = self._read(
                "SELECT (SELECT min(run_at) FROM flowz_executions WHERE status = 'pending' "
                f"AND queue = ? AND name IN ({marks})), "
                "EXISTS (SELECT 1 FROM flowz_executions WHERE status = 'running')",
                (queue, *names),
            )[0]
        dues = [float(d) for d in (due, also) if d is not None]
        return self.clock.until(min(dues), idle=not running) if dues else None

    async def register_worker(
        self,
        worker_id: str,
        host: str,
        pid: int,
        queue: str = "default",
        names: Sequence[str] = (),
    ) -> None:
        now = self.clock.now()
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO flowz_workers (id, host, pid, started_at, heartbeat_at, queue, names) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
                "heartbeat_at = excluded.heartbeat_at, queue = excluded.queue, "
                "names = excluded.names",
                (worker_id, host, pid, now, now, queue, dumps(list(names))),
            )

    async def heartbeat(
        self, worker_id: str, lease_seconds: float, running: Sequence[str]
    ) -> set[str]:
        now = self.clock.now()
        with self._tx() as cur:
            cur.execute("UPDATE flowz_workers SET heartbeat_at = ? WHERE id = ?", (now, worker_id))
            held = cur.execute(
                "UPDATE flowz_executions SET lease_expires_at = ? "
                "WHERE lease_owner = ? AND status = 'running' "
                "AND id IN (SELECT value FROM json_each(?)) RETURNING id",
                (now + lease_seconds, worker_id, dumps(list(running))),
            ).fetchall()
        return {r[0] for r in held}

    async def expire(self) -> int:
        now = self.clock.now()
        where = EXPIRED.format(p="?")
        if not self._read(f"SELECT 1 {where} LIMIT 1", (now, now)):
            return 0  # the common case: a read, not the write lock
        with self._tx() as cur:
            cur.execute(
                "UPDATE flowz_executions SET status = 'pending', run_at = ?, updated_at = ?, "
                f"wait_position = NULL, wait_count = 0 WHERE id IN (SELECT id {where})",
                (now, now, now, now),
            )
            woken = cur.rowcount
        self._notify()
        return woken

    async def lost(self, worker_id: str, running: Sequence[str]) -> set[str]:
        held = self._read(
            "SELECT id FROM flowz_executions WHERE lease_owner = ? AND status = 'running' "
            "AND id IN (SELECT value FROM json_each(?))",
            (worker_id, dumps(list(running))),
        )
        return set(running) - {r[0] for r in held}

    async def deregister_worker(self, worker_id: str) -> None:
        with self._tx() as cur:
            cur.execute(
                f"UPDATE flowz_executions SET status = 'pending', {LEASE_CLEARED}, "
                "updated_at = ? WHERE lease_owner = ? AND status = 'running'",
                (self.clock.now(), worker_id),
            )
            released = cur.rowcount
            cur.execute("DELETE FROM flowz_workers WHERE id = ?", (worker_id,))
        if released:
            self._notify()

    async def list_workers(self, host: str | None = None) -> list[WorkerRow]:
        sql = WORKER_SELECT
        rows = self._read(sql + " WHERE host = ?", (host,)) if host else self._read(sql)
        return [worker_row(r) for r in rows]

    async def reap(self, dead_worker_ids: Sequence[str]) -> int:
        now = self.clock.now()
        marks = ",".join("?" * len(dead_worker_ids)) or "NULL"
        with self._tx() as cur:
            cur.execute(
                f"UPDATE flowz_executions SET status = 'pending', {LEASE_CLEARED}, "
                "updated_at = ? "
                f"WHERE status = 'running' AND (lease_expires_at < ? OR lease_owner IN ({marks}))",
                (now, now, *dead_worker_ids),
            )
            reaped = cur.rowcount
            cur.execute(f"DELETE FROM flowz_workers WHERE id IN ({marks})", tuple(dead_worker_ids))
        if reaped:
            self._notify()
        return reaped

    # -- engine side --------------------------------------------------------
    async def read_journal(self, execution_id: str) -> dict[int, JournalEntry]:
        rows = self._read(
            f"SELECT {JOURNAL_SELECT} FROM flowz_journal WHERE execution_id = ?", (execution_id,)
        )
        return {r[0]: journal_entry(r) for r in rows}

    async def append_journal(self, fence: Fence, entry: JournalEntry) -> None:
        # The hot path of every inline step. Concurrent executions' entries of one loop
        # turn share one transaction (one fsync); each caller returns once it is committed.
        await self._appending.submit(Append(fence, entry))

    async def _flush_appends(self, batch: list[Pending[Append]]) -> None:
        with self._tx() as cur:
            for pending in batch:
                fence, entry = pending.item.fence, pending.item.entry
                if not self._fenced(cur, fence):
                    pending.failure = LeaseLost(fence.execution_id)
                    continue
                cur.execute(_JOURNAL_INSERT, journal_params(fence.execution_id, entry))

    async def schedule_children(
        self, fence: Fence, entries: Sequence[JournalEntry], children: Sequence[NewExecution]
    ) -> None:
        now = self.clock.now()
        with self._tx() as cur:
            self._fence(cur, fence)
            self._insert_entries(cur, fence.execution_id, entries)
            self._insert_executions(cur, children, now)
        self._notify()

    async def wait_for_children(
        self,
        fence: Fence,
        wait_position: int,
        positions: Sequence[int],
        entries: Sequence[JournalEntry] = (),
        children: Sequence[NewExecution] = (),
        first: bool = False,
    ) -> bool:
        now = self.clock.now()
        with self._tx() as cur:
            self._fence(cur, fence)
            self._insert_entries(cur, fence.execution_id, entries)
            self._insert_executions(cur, children, now)
            if first and any(
                cur.execute(
                    f"SELECT 1 FROM flowz_executions WHERE parent_id = ? AND position IN "
                    f"({','.join('?' * len(chunk))}) AND status IN ({TERMINAL_SQL}) LIMIT 1",
                    (fence.execution_id, *chunk),
                ).fetchone()
                for chunk in _chunks(positions)
            ):
                return False
            waiting_on = 0
            for chunk in _chunks(positions):
                cur.execute(
                    "UPDATE flowz_executions SET awaited_at = ? WHERE parent_id = ? "
                    f"AND position IN ({','.join('?' * len(chunk))}) "
                    f"AND status NOT IN ({TERMINAL_SQL})",
                    (wait_position, fence.execution_id, *chunk),
                )
                waiting_on += cur.rowcount
            if waiting_on:
                cur.execute(
                    "UPDATE flowz_executions SET status = 'waiting', wait_position = ?, "
                    f"wait_count = ?, {LEASE_CLEARED}, updated_at = ? WHERE id = ?",
                    (wait_position, 1 if first else waiting_on, now, fence.execution_id),
                )
        if children:
            self._notify()
        return waiting_on > 0

    async def child_results(self, parent_id: str, positions: Sequence[int]) -> list[ExecutionRow]:
        rows: list[ExecutionRow] = []
        for chunk in _chunks(sorted(positions)):
            rows.extend(
                execution_row(r)
                for r in self._read(
                    f"SELECT {_COLUMNS} FROM flowz_executions WHERE parent_id = ? "
                    f"AND position IN ({','.join('?' * len(chunk))}) "
                    "ORDER BY position, child_index",
                    (parent_id, *chunk),
                )
            )
        return rows

    async def child_outcomes(
        self, parent_id: str, positions: Sequence[int], after: tuple[int, int] | None, limit: int
    ) -> list[ChildOutcome]:
        in_positions = "position IN (SELECT value FROM json_each(?))"
        positions_json = dumps(list(positions))
        sql, params = child_outcomes_sql("?", in_positions, parent_id, positions_json, after, limit)
        return [child_outcome(r) for r in self._read(sql, params)]

    async def cancel_child(self, fence: Fence, entry: JournalEntry, child_id: str) -> None:
        with self._tx() as cur:
            now = self._fence(cur, fence)
            cur.execute(
                "UPDATE flowz_executions SET status = 'cancelled', finished_at = ?, "
                f"updated_at = ?, {LEASE_CLEARED} WHERE id = ? AND parent_id = ? "
                f"AND status NOT IN ({TERMINAL_SQL})",
                (now, now, child_id, fence.execution_id),
            )
            cur.execute(_CANCEL_DESCENDANTS, (child_id, now, now))
            self._insert_entries(cur, fence.execution_id, [entry])
        self._notify()

    async def suspend_until(self, fence: Fence, run_at: float, entry: JournalEntry | None) -> None:
        with self._tx() as cur:
            self._fence(cur, fence)
            if entry is not None:
                self._insert_entries(cur, fence.execution_id, [entry])
            cur.execute(
                f"UPDATE flowz_executions SET status = 'pending', run_at = ?, {LEASE_CLEARED} "
                "WHERE id = ?",
                (run_at, fence.execution_id),
            )
        self._notify()

    async def retry_later(self, fence: Fence, run_at: float, error: JSON) -> None:
        with self._tx() as cur:
            self._fence(cur, fence)
            cur.execute(
                "UPDATE flowz_executions SET status = 'pending', run_at = ?, "
                f"attempt = attempt + 1, error = ?, {LEASE_CLEARED} WHERE id = ?",
                (run_at, dumps(error), fence.execution_id),
            )
        self._notify()

    async def finish(self, fence: Fence, status: str, output: JSON, error: JSON) -> None:
        await self._finishing.submit(Finish(fence, status, output, error))

    async def _flush_finishes(self, batch: list[Pending[Finish]]) -> None:
        self._finish_batch(batch)
        self._notify()

    def _finish_batch(self, batch: list[Pending[Finish]]) -> None:
        now = self.clock.now()
        with self._tx() as cur:
            for pending in batch:
                item = pending.item
                done = cur.execute(
                    "UPDATE flowz_executions SET status = ?, output = ?, error = ?, "
                    f"finished_at = ?, updated_at = ?, {LEASE_CLEARED} "
                    "WHERE id = ? AND claim_token = ? AND status = 'running' "
                    "RETURNING parent_id, awaited_at, kind",
                    (
                        item.status,
                        dumps_or_none(item.output),
                        dumps_or_none(item.error),
                        now,
                        now,
                        item.fence.execution_id,
                        item.fence.token,
                    ),
                ).fetchone()
                if done is None:
                    pending.failure = LeaseLost(item.fence.execution_id)
                    continue
                parent_id, awaited_at, kind = done
                if kind == "workflow":
                    cur.execute(_CANCEL_DESCENDANTS, (item.fence.execution_id, now, now))
                if parent_id is None or awaited_at is None:
                    continue
                # The last awaited child makes the parent runnable; a failure wakes it at once.
                wake_now = "1" if item.status != "succeeded" else "wait_count - 1 <= 0"
                cur.execute(
                    "UPDATE flowz_executions SET wait_count = wait_count - 1, "
                    f"status = CASE WHEN {wake_now} THEN 'pending' ELSE status END, "
                    f"run_at = CASE WHEN {wake_now} THEN ? ELSE run_at END, updated_at = ?, "
                    # Woken once: children of that wait that end later find nothing to wake.
                    f"wait_position = CASE WHEN {wake_now} THEN NULL ELSE wait_position END "
                    "WHERE id = ? AND status = 'waiting' AND wait_position = ?",
                    (now, now, parent_id, awaited_at),
                )

    # -- messages and events ---------------------------------------------------
    async def send_message(
        self, run_id: str, topic: str, value: JSON, idempotency_key: str | None
    ) -> bool:
        now = self.clock.now()
        with self._tx() as cur:
            found = cur.execute(
                "SELECT kind, status FROM flowz_executions WHERE id = ?", (run_id,)
            ).fetchone()
            where = f"in {str(self.path)!r}"
            check_message_target(run_id, found, where, ended_ok=True)
            if (
                idempotency_key is not None
                and cur.execute(
                    "SELECT 1 FROM flowz_messages WHERE run_id = ? AND idempotency_key = ?",
                    (run_id, idempotency_key),
                ).fetchone()
            ):
                return False  # delivered before, even if the run has ended since
            check_message_target(run_id, found, where)
            cur.execute(
                MESSAGE_INSERT.format(p="?"),
                (run_id, topic, dumps(value), idempotency_key, now, run_id),
            )
            cur.execute(WAKE_RECEIVER.format(p="?"), (now, now, run_id, run_id, topic))
        self._notify()
        return True

    async def receive(
        self, fence: Fence, position: int, topic: str, deadline: float | None
    ) -> tuple[bool, JSON]:
        with self._tx() as cur:
            now = self._fence(cur, fence)
            taken = cur.execute(
                "SELECT status, output FROM flowz_journal WHERE execution_id = ? AND position = ?",
                (fence.execution_id, position),
            ).fetchone()
            message = cur.execute(
                NEXT_MESSAGE.format(p="?"), (fence.execution_id, topic)
            ).fetchone()
            outcome, value = receive_outcome(taken, message, deadline, now)
            if outcome == "taken":
                return True, value
            if outcome == "message":
                cur.execute(
                    "UPDATE flowz_messages SET consumed_at = ? WHERE run_id = ? AND seq = ?",
                    (now, fence.execution_id, message[0]),
                )
            entry = receive_entry(position, topic, outcome, value, deadline, now)
            self._insert_entries(cur, fence.execution_id, [entry])
            if outcome != "wait":
                return True, value
            cur.execute(
                f"UPDATE flowz_executions SET status = ?, run_at = ?, {LEASE_CLEARED}, "
                "updated_at = ? WHERE id = ?",
                (
                    "waiting" if deadline is None else "pending",
                    now if deadline is None else deadline,
                    now,
                    fence.execution_id,
                ),
            )
        self._notify()
        return False, None

    async def set_event(self, fence: Fence, entry: JournalEntry, name: str, value: JSON) -> None:
        with self._tx() as cur:
            now = self._fence(cur, fence)
            cur.execute(EVENT_UPSERT.format(p="?"), (fence.execution_id, name, dumps(value), now))
            self._insert_entries(cur, fence.execution_id, [entry])
        self._notify()

    async def write_stream(
        self, fence: Fence, entry: JournalEntry, name: str, value: JSON, closed: bool
    ) -> None:
        with self._tx() as cur:
            now = self._fence(cur, fence)
            run_id = fence.execution_id
            cur.execute(
                STREAM_APPEND.format(p="?"),
                (run_id, name, dumps(value), int(closed), now, run_id, name),
            )
            self._insert_entries(cur, run_id, [entry])
        self._notify()

    async def read_stream(self, run_id: str, name: str, after: int) -> list[StreamItem]:
        rows = self._read(STREAM_READ.format(p="?"), (run_id, name, after))
        return [StreamItem(seq, loads(value), bool(closed)) for seq, value, closed in rows]

    async def get_events(self, run_id: str) -> dict[str, JSON]:
        rows = self._read("SELECT name, value FROM flowz_events WHERE run_id = ?", (run_id,))
        return {name: loads(value) for name, value in rows}

    async def release(self, fence: Fence) -> None:
        with self._tx() as cur:
            cur.execute(
                f"UPDATE flowz_executions SET status = 'pending', {LEASE_CLEARED}, "
                "updated_at = ? WHERE id = ? AND claim_token = ? AND status = 'running'",
                (self.clock.now(), fence.execution_id, fence.token),
            )
        self._notify()
