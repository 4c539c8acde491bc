"""PostgresStore: psycopg 3 (async, pooled), SKIP LOCKED claims, LISTEN/NOTIFY wake-ups.

Leases and due times are compared with the database's clock, so a worker whose
clock drifts cannot steal or keep work it should not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'Please install `psycopg` to use PostgreSQL: pip install "flowz[postgres]"'
    ) from exc
from sqlalchemy.dialects import postgresql as pg_dialect

from .._serde import dumps
from .._types import JSON, TERMINAL_STATUSES
from ..errors import (
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
    StoreNotWritableError,
    StoreUnavailableError,
)
from ._batch import Finish, GroupCommit, Pending
from ._models import SCHEMA_VERSION, schema_statements
from ._protocol import (
    Claim,
    ExecutionRow,
    Fence,
    JournalEntry,
    LeaseLost,
    NewExecution,
    WorkerRow,
)
from ._rows import (
    EXECUTION_COLUMNS,
    JOURNAL_COLUMNS,
    dumps_or_none,
    execution_row,
    journal_entry,
    journal_params,
    new_execution_params,
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
_CHANNEL = "flowz_changed"
_TERMINAL = list(TERMINAL_STATUSES)
_RELISTEN_SECONDS = 0.5  # pause before reconnecting a broken LISTEN connection
_MIGRATION_LOCK = 0x666C6F777A  # pg_advisory_xact_lock key: one migrator at a time
_RETRIES = 3  # attempts of one operation when the connection breaks (server restart)


# One statement for any width: arrays unnested server-side, no per-child round trip.
_INSERT_EXECUTIONS = (
    "INSERT INTO flowz_executions (id, root_id, parent_id, position, child_index, kind, "
    "name, input, status, attempt, max_attempts, run_at, queue, priority, wait_count, "
    "created_at, updated_at) "
    f"SELECT i, r, p, pos, ci, k, n, inp, 'pending', 0, ma, coalesce(ra, {_NOW}), q, pr, "
    f"0, {_NOW}, {_NOW} FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], "
    "%s::int[], %s::text[], %s::text[], %s::text[], %s::int[], %s::float8[], %s::text[], "
    "%s::int[]) AS t(i, r, p, pos, ci, k, n, inp, ma, ra, q, pr) "
    "ON CONFLICT (id) DO NOTHING"
)


def _insert_params(executions: Sequence[NewExecution]) -> list[list[Any]]:
    return [list(column) for column in zip(*map(new_execution_params, executions), strict=True)]


class PostgresStore:
    """The PostgreSQL store, for many workers on many machines.

    Example:
        >>> store = PostgresStore("postgresql://root@127.0.0.1/flowz")  # doctest: +SKIP
        >>> await store.open()  # doctest: +SKIP
    """

    def __init__(
        self, url: str, *, max_connections: int = 10, acquire_timeout: float = 30.0
    ) -> None:
        self.url = url
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            timeout=acquire_timeout,
            open=False,
            # Autocommit: a one-statement operation is one round trip; others use transaction().
            kwargs={"autocommit": True},
        )
        self._listen_task: asyncio.Task[None] | None = None
        self._generation = 0  # changes seen: local commits and notifications
        self._changed: anyio.Event | None = None
        self._finishing = GroupCommit[Finish](self._flush_finishes)

    async def open(self) -> None:
        """Open the pool; fail clearly if the server cannot be reached."""
        try:
            # One direct connection first: it fails at once with the server's own reason.
            probe = await psycopg.AsyncConnection.connect(self.url, connect_timeout=10)
            await probe.close()
            await self._pool.open(wait=True, timeout=10)
        except Exception as exc:  # any failure to connect: psycopg, OS or pool timeout
            await self._pool.close()
            reason = " ".join(str(exc).split())
            raise StoreUnavailableError(
                f"cannot reach PostgreSQL at {self._safe_url()}: {reason}. Check that the "
                "server runs and FLOWZ_DATABASE_URL is right."
            ) from exc

    def _safe_url(self) -> str:
        head, sep, tail = self.url.rpartition("@")
        if not sep:
            return self.url
        scheme, _, credentials = head.partition("://")
        return f"{scheme}://{credentials.split(':')[0]}@{tail}"

    # -- plumbing -----------------------------------------------------------
    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncCursor[Any]]:
        """One transaction on a pooled connection; committed at the end of the block."""
        try:
            async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: psycopg.Error) -> StoreError:
        reason = " ".join(str(exc).split())
        if isinstance(exc, psycopg.errors.DiskFull):
            return StoreNotWritableError(
                f"the disk of the PostgreSQL server at {self._safe_url()} is full ({reason}); "
                "the write was rolled back and nothing stored before it is lost. Free space "
                "on the server, then resume the run by its id"
            )
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return StoreNotWritableError(
                f"the PostgreSQL database at {self._safe_url()} is read-only ({reason}); "
                "nothing stored was changed. Point FLOWZ_DATABASE_URL at the primary, or "
                "turn off default_transaction_read_only for this database"
            )
        if isinstance(exc, PoolTimeout):
            return StoreUnavailableError(
                f"no PostgreSQL connection came free within {self._pool.timeout:g} s "
                f"(all {self._pool.max_size} of this process's are busy, or the server refuses "
                "new ones): raise FLOWZ_POOL_SIZE, lower FLOWZ_CONCURRENCY, or check the "
                "server's max_connections"
            )
        return StoreError(f"PostgreSQL error: {exc}")

    async def _retrying(self, operation: Any, *args: Any) -> Any:
        """Run operation(*args); after a broken connection (server restart), try again."""
        for attempt in range(1, _RETRIES + 1):
            try:
                return await operation(*args)
            except StoreError as exc:
                cause = exc.__cause__
                broken = (
                    not isinstance(exc, StoreNotWritableError)
                    and isinstance(cause, psycopg.OperationalError | psycopg.InterfaceError)
                    and not isinstance(cause, PoolTimeout)
                )  # waiting again would not help
                if not broken or attempt == _RETRIES:
                    raise
                await anyio.sleep(0.2 * attempt)
                # Idle connections broke too if the server restarted: replace them all now,
                # rather than checking every connection at every checkout (a round trip).
                await self._pool.check()
        raise AssertionError("unreachable")  # pragma: no cover

    def _notify(self) -> None:
        self._generation += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    @staticmethod
    async def _fence(cur: psycopg.AsyncCursor[Any], fence: Fence) -> None:
        await cur.execute(
            f"UPDATE flowz_executions SET updated_at = {_NOW} "
            "WHERE id = %s AND claim_token = %s AND status = 'running'",
            (fence.execution_id, fence.token),
        )
        if cur.rowcount != 1:
            raise LeaseLost(fence.execution_id)

    @staticmethod
    async def _insert_entries(
        cur: psycopg.AsyncCursor[Any], execution_id: str, entries: Sequence[JournalEntry]
    ) -> None:
        if not entries:
            return
        await cur.executemany(
            f"INSERT INTO flowz_journal ({JOURNAL_COLUMNS}) "
            f"VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) {_JOURNAL_UPSERT}",
            [journal_params(execution_id, e) for e in entries],
        )

    @staticmethod
    async def _insert_executions(
        cur: psycopg.AsyncCursor[Any], executions: Sequence[NewExecution]
    ) -> int:
        if not executions:
            return 0
        await cur.execute(_INSERT_EXECUTIONS, _insert_params(executions))
        return cur.rowcount

    # -- lifecycle ----------------------------------------------------------
    async def migrate(self) -> None:
        async with self._tx() as cur:
            # Workers starting together on an empty database: one creates, the others wait.
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            for statement in schema_statements(pg_dialect.dialect()):  # type: ignore[no-untyped-call]
                await cur.execute(statement)
            await cur.execute("SELECT max(version) FROM flowz_schema")
            found = (await cur.fetchone() or [None])[0]
            if found is None:
                await cur.execute(
                    "INSERT INTO flowz_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                )
            elif found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"the database at {self._safe_url()} has schema v{found}, this flowz "
                    f"knows v{SCHEMA_VERSION}: upgrade flowz"
                )

    async def aclose(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listen_task
            self._listen_task = None
        await self._pool.close()

    def change_mark(self) -> object:
        self._start_listening()
        return self._generation

    async def wait_for_change(self, timeout: float, since: object | None = None) -> None:
        self._start_listening()
        if since is not None and since != self._generation:
            return
        if self._changed is None:
            self._changed = anyio.Event()
        with anyio.move_on_after(timeout):
            await self._changed.wait()

    def _start_listening(self) -> None:
        if self._listen_task is None or self._listen_task.done():
            # One task per store reads the notifications, for as long as the store is open:
            # waiters only wait on an event, so cancelling one never breaks the connection.
            self._listen_task = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        """Wake waiters on every notification; reconnect after a broken connection."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True
                ) as listener:
                    await listener.execute(f"LISTEN {_CHANNEL}")
                    self._notify()  # what changed while nobody listened is for the waiters to see
                    async for _ in listener.notifies():
                        self._notify()
            except (psycopg.Error, OSError):
                pass  # the server restarted or is down: waiters poll until this reconnects
            await anyio.sleep(_RELISTEN_SECONDS)

    @staticmethod
    async def _announce(cur: psycopg.AsyncCursor[Any]) -> None:
        """Wake listening workers when this transaction commits."""
        await cur.execute(f"NOTIFY {_CHANNEL}")

    # -- runs ---------------------------------------------------------------
    async def create_run(self, run: NewExecution) -> tuple[ExecutionRow, bool]:
        # One autocommit statement: insert unless the id exists, wake the workers if it
        # was new, return the row either way. The outer SELECT does not see the CTE's new
        # row (one snapshot), so exactly one of the two branches returns it.
        rows = await self._select(
            f"WITH created AS ({_INSERT_EXECUTIONS} RETURNING {_COLUMNS}) "
            f"SELECT {_COLUMNS}, true FROM created "
            f"CROSS JOIN (SELECT pg_notify('{_CHANNEL}', '')) AS announced "
            f"UNION ALL SELECT {_COLUMNS}, false FROM flowz_executions WHERE id = %s",
            [*_insert_params([run]), run.id],
        )
        if not rows:
            # Another client inserted the same id concurrently: the insert waited for it,
            # but this statement's snapshot predates it. The next statement sees it.
            rows = await self._select(
                f"SELECT {_COLUMNS}, false FROM flowz_executions WHERE id = %s", (run.id,)
            )
        return execution_row(rows[0]), rows[0][-1]

    async def _statement(self, sql: str, params: Sequence[Any]) -> psycopg.AsyncCursor[Any]:
        """One statement, its own transaction (autocommit): a single round trip."""
        try:
            async with self._pool.connection() as conn:
                return await conn.execute(sql, params)
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    async def _select(self, sql: str, params: Sequence[Any]) -> list[Any]:
        async def operation() -> list[Any]:
            return await (await self._statement(sql, params)).fetchall()

        return await self._retrying(operation)  # type: ignore[no-any-return]

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        rows = await self._select(
            f"SELECT {_COLUMNS} FROM flowz_executions WHERE id = %s", (execution_id,)
        )
        return execution_row(rows[0]) if rows else None

    async def list_executions(self, root_id: str) -> list[ExecutionRow]:
        rows = await self._select(
            f"SELECT {_COLUMNS} FROM flowz_executions WHERE root_id = %s "
            "ORDER BY parent_id IS NOT NULL, created_at, parent_id, position, child_index",
            (root_id,),
        )
        return [execution_row(r) for r in rows]

    async def list_runs(self, status: str | None, limit: int) -> list[ExecutionRow]:
        where = "parent_id IS NULL" + (" AND status = %s" if status else "")
        rows = await self._select(
            f"SELECT {_COLUMNS} FROM flowz_executions WHERE {where} "
            "ORDER BY created_at DESC LIMIT %s",
            (status, limit) if status else (limit,),
        )
        return [execution_row(r) for r in rows]

    async def cancel_run(self, run_id: str) -> int:
        async def operation() -> int:
            async with self._tx() as cur:
                await cur.execute("SELECT 1 FROM flowz_executions WHERE id = %s", (run_id,))
                if await cur.fetchone() is None:
                    raise RunNotFoundError(f"no run with id {run_id!r} at {self._safe_url()}")
                await cur.execute(
                    f"UPDATE flowz_executions SET status = 'cancelled', finished_at = {_NOW}, "
                    f"updated_at = {_NOW}, claim_token = NULL, lease_owner = NULL, "
                    "lease_expires_at = NULL WHERE root_id = %s AND status <> ALL(%s)",
                    (run_id, _TERMINAL),
                )
                cancelled = cur.rowcount
                await self._announce(cur)
                return cancelled

        return await self._retrying(operation)  # type: ignore[no-any-return]

    async def retry_run(self, run_id: str) -> bool:
        async def operation() -> bool:
            async with self._tx() as cur:
                await cur.execute(
                    "SELECT status FROM flowz_executions WHERE id = %s FOR UPDATE", (run_id,)
                )
                found = await cur.fetchone()
                if found is None:
                    raise RunNotFoundError(f"no run with id {run_id!r} at {self._safe_url()}")
                if found[0] != "failed":
                    return False
                await cur.execute(
                    "SELECT id FROM flowz_executions WHERE root_id = %s AND status = 'failed'",
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

        return await self._retrying(operation)  # type: ignore[no-any-return]

    # -- worker side --------------------------------------------------------
    async def claim(
        self, worker_id: str, names: Sequence[str], queue: str, limit: int, lease_seconds: float
    ) -> list[Claim]:
        if not names or limit <= 0:
            return []
        token = uuid.uuid4().hex

        # One statement (autocommit): a single round trip.
        rows = await self._select(
            "WITH picked AS (SELECT id, started_at FROM flowz_executions "
            "WHERE status = 'pending' AND queue = %s AND name = ANY(%s) "
            f"AND run_at <= {_NOW} ORDER BY priority DESC, run_at LIMIT %s "
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
            Claim(execution_row(r), Fence(r[0], token), resumed=r[22], db_now=r[23]) for r in rows
        ]
        claims.sort(key=lambda c: (-c.execution.priority, c.execution.run_at))
        return claims

    async def next_due_at(self, names: Sequence[str], queue: str) -> float | None:
        if not names:
            return None
        # Seconds from the database's now, mapped onto this process's clock.
        rows = await self._select(
            f"SELECT min(run_at) - {_NOW} FROM flowz_executions WHERE status = 'pending' "
            "AND queue = %s AND name = ANY(%s)",
            (queue, list(names)),
        )
        return None if rows[0][0] is None else time.time() + float(rows[0][0])

    async def register_worker(self, worker_id: str, host: str, pid: int) -> None:
        async def operation() -> None:
            async with self._tx() as cur:
                await cur.execute(
                    "INSERT INTO flowz_workers (id, host, pid, started_at, heartbeat_at) "
                    f"VALUES (%s, %s, %s, {_NOW}, {_NOW}) ON CONFLICT (id) DO UPDATE "
                    "SET heartbeat_at = excluded.heartbeat_at",
                    (worker_id, host, pid),
                )

        await self._retrying(operation)

    async def heartbeat(
        self, worker_id: str, lease_seconds: float, running: Sequence[str]
    ) -> set[str]:
        async def operation() -> set[str]:
            async with self._tx() as cur:
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

        return await self._retrying(operation)  # type: ignore[no-any-return]

    async def deregister_worker(self, worker_id: str) -> None:
        async def operation() -> None:
            async with self._tx() as cur:
                await cur.execute(
                    "UPDATE flowz_executions SET status = 'pending', claim_token = NULL, "
                    "lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = %s "
                    "AND status = 'running'",
                    (worker_id,),
                )
                if cur.rowcount:
                    await self._announce(cur)
                await cur.execute("DELETE FROM flowz_workers WHERE id = %s", (worker_id,))

        await self._retrying(operation)

    async def list_workers(self, host: str | None = None) -> list[WorkerRow]:
        sql = "SELECT id, host, pid, started_at, heartbeat_at FROM flowz_workers"
        rows = await (
            self._select(sql + " WHERE host = %s", (host,)) if host else self._select(sql, ())
        )
        return [WorkerRow(*r) for r in rows]

    async def reap(self, dead_worker_ids: Sequence[str]) -> int:
        async def operation() -> int:
            async with self._tx() as cur:
                await cur.execute(
                    "UPDATE flowz_executions SET status = 'pending', claim_token = NULL, "
                    f"lease_owner = NULL, lease_expires_at = NULL, updated_at = {_NOW} "
                    f"WHERE status = 'running' AND (lease_expires_at < {_NOW} "
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

        return await self._retrying(operation)  # type: ignore[no-any-return]

    # -- engine side --------------------------------------------------------
    async def read_journal(self, execution_id: str) -> dict[int, JournalEntry]:
        rows = await self._select(
            "SELECT position, kind, name, status, output, error, attempt, started_at, "
            "finished_at FROM flowz_journal WHERE execution_id = %s",
            (execution_id,),
        )
        return {r[0]: journal_entry(r) for r in rows}

    async def append_journal(self, fence: Fence, entry: JournalEntry) -> None:
        # The hot path of every inline step: fence and write in one statement. FOR SHARE
        # holds off a reaper or a new claim until this write commits.
        async def operation() -> int:
            cur = await self._statement(
                f"INSERT INTO flowz_journal ({JOURNAL_COLUMNS}) "
                "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM "
                "flowz_executions WHERE id = %s AND claim_token = %s AND status = 'running' "
                f"FOR SHARE) {_JOURNAL_UPSERT}",
                (*journal_params(fence.execution_id, entry), fence.execution_id, fence.token),
            )
            return cur.rowcount

        if await self._retrying(operation) != 1:
            raise LeaseLost(fence.execution_id)

    async def schedule_children(
        self, fence: Fence, entries: Sequence[JournalEntry], children: Sequence[NewExecution]
    ) -> None:
        async def operation() -> None:
            async with self._tx() as cur:
                await self._fence(cur, fence)
                await self._insert_entries(cur, fence.execution_id, entries)
                await self._insert_executions(cur, children)
                await self._announce(cur)

        await self._retrying(operation)

    async def wait_for_children(
        self,
        fence: Fence,
        wait_position: int,
        positions: Sequence[int],
        entries: Sequence[JournalEntry] = (),
        children: Sequence[NewExecution] = (),
    ) -> bool:
        async def operation() -> bool:
            async with self._tx() as cur:
                # Lock the parent first: a child's completion locks child then parent, and
                # waits here for our commit, so it sees awaited_at and counts down after us.
                await self._fence(cur, fence)
                await self._insert_entries(cur, fence.execution_id, entries)
                await self._insert_executions(cur, children)
                await cur.execute(
                    "UPDATE flowz_executions SET awaited_at = %s WHERE parent_id = %s "
                    "AND position = ANY(%s) AND status <> ALL(%s)",
                    (wait_position, fence.execution_id, list(positions), _TERMINAL),
                )
                waiting_on = cur.rowcount
                if waiting_on:
                    await cur.execute(
                        "UPDATE flowz_executions SET status = 'waiting', wait_position = %s, "
                        "wait_count = %s, claim_token = NULL, lease_owner = NULL, "
                        f"lease_expires_at = NULL, updated_at = {_NOW} WHERE id = %s",
                        (wait_position, waiting_on, fence.execution_id),
                    )
                if children:
                    await self._announce(cur)
                return waiting_on > 0

        return await self._retrying(operation)  # type: ignore[no-any-return]

    async def child_results(self, parent_id: str, positions: Sequence[int]) -> list[ExecutionRow]:
        rows = await self._select(
            f"SELECT {_COLUMNS} FROM flowz_executions WHERE parent_id = %s "
            "AND position = ANY(%s) ORDER BY position, child_index",
            (parent_id, list(positions)),
        )
        return [execution_row(r) for r in rows]

    async def suspend_until(self, fence: Fence, run_at: float, entry: JournalEntry | None) -> None:
        async def operation() -> None:
            async with self._tx() as cur:
                await self._fence(cur, fence)
                if entry is not None:
                    await self._insert_entries(cur, fence.execution_id, [entry])
                await cur.execute(
                    "UPDATE flowz_executions SET status = 'pending', run_at = %s, "
                    "claim_token = NULL, lease_owner = NULL, lease_expires_at = NULL "
                    "WHERE id = %s",
                    (run_at, fence.execution_id),
                )
                await self._announce(cur)

        await self._retrying(operation)

    async def retry_later(self, fence: Fence, run_at: float, error: JSON) -> None:
        async def operation() -> None:
            async with self._tx() as cur:
                await self._fence(cur, fence)
                await cur.execute(
                    "UPDATE flowz_executions SET status = 'pending', run_at = %s, "
                    "attempt = attempt + 1, error = %s, claim_token = NULL, lease_owner = NULL, "
                    "lease_expires_at = NULL WHERE id = %s",
                    (run_at, dumps(error), fence.execution_id),
                )
                await self._announce(cur)

        await self._retrying(operation)

    async def finish(self, fence: Fence, status: str, output: JSON, error: JSON) -> None:
        await self._finishing.submit(Finish(fence, status, output, error))

    async def _flush_finishes(self, batch: list[Pending[Finish]]) -> None:
        await self._retrying(self._finish_batch, batch)

    async def _finish_batch(self, batch: list[Pending[Finish]]) -> None:
        batch = sorted(batch, key=lambda p: p.item.fence.execution_id)
        async with self._tx() as cur:
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
                f"finished_at = {_NOW}, updated_at = {_NOW}, claim_token = NULL, "
                "lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = %s AND claim_token = %s AND status = 'running' "
                "RETURNING parent_id, awaited_at",
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
            for pending in batch:
                pending.failure = None
                done = await cur.fetchone()
                cur.nextset()
                if done is None:
                    pending.failure = LeaseLost(pending.item.fence.execution_id)
                elif done[0] is not None and done[1] is not None:
                    counts = ended.setdefault((done[0], done[1]), [0, 0])
                    counts[0] += 1
                    counts[1] += pending.item.status != "succeeded"
            if ended:
                # The last awaited child makes the parent runnable; a failure wakes it at once.
                await cur.executemany(
                    "UPDATE flowz_executions SET wait_count = wait_count - %(n)s, "
                    "status = CASE WHEN %(failed)s OR wait_count - %(n)s <= 0 THEN 'pending' "
                    "ELSE status END, "
                    f"run_at = CASE WHEN %(failed)s OR wait_count - %(n)s <= 0 THEN {_NOW} "
                    f"ELSE run_at END, updated_at = {_NOW} "
                    "WHERE id = %(id)s AND status = 'waiting' AND wait_position = %(at)s",
                    [
                        {"id": parent, "at": at, "n": n, "failed": failed > 0}
                        for (parent, at), (n, failed) in sorted(ended.items())
                    ],
                )
            await self._announce(cur)
        self._notify()

    async def release(self, fence: Fence) -> None:
        async def operation() -> None:
            async with self._tx() as cur:
                await cur.execute(
                    "UPDATE flowz_executions SET status = 'pending', claim_token = NULL, "
                    "lease_owner = NULL, lease_expires_at = NULL "
                    "WHERE id = %s AND claim_token = %s AND status = 'running'",
                    (fence.execution_id, fence.token),
                )
                await self._announce(cur)

        await self._retrying(operation)
