"""PostgreSQL plumbing: the pool, retries after a broken connection, errors, LISTEN.

Kept apart from the store's intent methods (procrastinate keeps its
`psycopg_connector` apart from its `manager` the same way). The only module
besides `_postgres` that imports psycopg; both load when a PostgreSQL URL is
first opened.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .._config import redacted_url
from ..errors import StoreError, StoreNotWritableError, StoreUnavailableError
from ._sql import ChangeSignal

__all__ = ["CHANNEL", "Cursor", "PgConnector", "retried", "scratch_database"]

P = ParamSpec("P")
T = TypeVar("T")

#: The NOTIFY channel every write that makes work runnable or ends it announces on.
CHANNEL = "flowz_changed"
_RELISTEN_SECONDS = 0.5  # pause before reconnecting a broken LISTEN connection
_RETRIES = 3  # attempts of one operation when the connection breaks (server restart)
# This process's own NOTIFY comes back on its LISTEN connection within this, or that
# connection is deaf (dropped without a word, as a partition or a NAT timeout does): a
# new one replaces it. TCP keepalive cannot tell: a proxy in between still answers it.
_ECHO_SECONDS = 5.0

log = logging.getLogger("flowz")

Cursor = psycopg.AsyncCursor[Any]


class PgConnector:
    """A psycopg pool, error mapping, retries, and the change signal fed by LISTEN.

    No background task: the first waiter in `wait_for_change` reads the LISTEN
    connection for everyone while it waits, and hands that job on when it leaves.
    """

    def __init__(self, url: str, *, max_connections: int, acquire_timeout: float) -> None:
        self.url = url
        self.pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            timeout=acquire_timeout,
            open=False,
            # Autocommit: a one-statement operation is one round trip; others use transaction().
            kwargs={"autocommit": True},
        )
        self.changes = ChangeSignal()
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._listening_on: psycopg.AsyncConnection[Any] | None = None  # LISTEN sent here
        self._reading = False  # a waiter reads the LISTEN connection
        self._echo_due: float | None = None  # when our own NOTIFY must have come back

    def safe_url(self) -> str:
        """The URL without its password."""
        return redacted_url(self.url)

    async def open(self) -> None:
        """Open the pool; fail clearly if the server cannot be reached."""
        try:
            # A direct connection first: it fails at once with the server's own reason
            # (the pool would retry until its timeout). It becomes the LISTEN connection.
            self._listener = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, connect_timeout=10
            )
            await self.pool.open(wait=True, timeout=10)
        except Exception as exc:  # any failure to connect: psycopg, OS or pool timeout
            await self.aclose()
            reason = " ".join(str(exc).split())
            raise StoreUnavailableError(
                f"cannot reach PostgreSQL at {self.safe_url()}: {reason}. Check that the "
                "server runs and FLOWZ_DATABASE_URL is right."
            ) from exc

    async def aclose(self) -> None:
        """Close the LISTEN connection and the pool."""
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        await self.pool.close()

    # -- statements -----------------------------------------------------------
    def transaction(self, *, pipelined: bool = False) -> _Transaction:
        """One transaction on a pooled connection; committed at the end of the block.

        `pipelined`: in pipeline mode, a statement is sent without waiting for the
        last one's result, until a fetch needs it (BEGIN goes with the first
        statement, COMMIT with the last). The server still runs them one after the
        other. Only for blocks that read no `rowcount` before a fetch.
        """
        return _Transaction(self, pipelined)

    async def checkout(self) -> psycopg.AsyncConnection[Any]:
        """A pooled connection, to give back with `pool.putconn`."""
        try:
            return await self.pool.getconn()
        except psycopg.Error as exc:
            raise self.error(exc) from exc

    async def execute(self, sql: str, params: Sequence[Any]) -> Cursor:
        """One statement, its own transaction (autocommit): a single round trip."""
        conn = await self.checkout()
        try:
            return await conn.execute(sql, params)
        except psycopg.Error as exc:
            raise self.error(exc) from exc
        finally:
            await self.pool.putconn(conn)

    async def select(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """The rows of one autocommit statement, retried after a broken connection."""

        async def operation() -> list[Any]:
            return await (await self.execute(sql, params)).fetchall()

        return await self.retry(operation)

    def error(self, exc: psycopg.Error) -> StoreError:
        """The StoreError a driver error means for the user."""
        reason = " ".join(str(exc).split())
        if isinstance(exc, psycopg.errors.DiskFull):
            return StoreNotWritableError(
                f"the disk of the PostgreSQL server at {self.safe_url()} is full ({reason}); "
                "the write was rolled back and nothing stored before it is lost. Free space "
                "on the server, then resume the run by its id"
            )
        if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
            return StoreNotWritableError(
                f"the PostgreSQL database at {self.safe_url()} is read-only ({reason}); "
                "nothing stored was changed. Point FLOWZ_DATABASE_URL at the primary, or "
                "turn off default_transaction_read_only for this database"
            )
        if isinstance(exc, psycopg.DataError) and "NUL (0x00)" in reason:
            return StoreError(
                "a value holds a NUL character (\\x00), which PostgreSQL cannot store in "
                "text; nothing was stored: remove it from the id, name, topic or key"
            )
        if isinstance(exc, PoolTimeout):
            return StoreUnavailableError(
                f"no PostgreSQL connection came free within {self.pool.timeout:g} s "
                f"(all {self.pool.max_size} of this process's are busy, or the server refuses "
                "new ones): raise FLOWZ_POOL_SIZE, lower FLOWZ_CONCURRENCY, or check the "
                "server's max_connections"
            )
        return StoreError(f"PostgreSQL error: {exc}")

    async def retry(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation`; after a broken connection (server restart), try it again."""
        attempt = 1
        while True:
            try:
                return await operation()
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
            attempt += 1
            # Idle connections broke too if the server restarted: replace them all now,
            # rather than checking every connection at every checkout (a round trip).
            await self.pool.check()

    # -- the change signal ------------------------------------------------------
    def expect_echo(self) -> None:
        """This process sent a NOTIFY: its LISTEN connection must hear it soon.

        Said when the NOTIFY is sent; a transaction that then rolls back costs at most
        one early reconnect, if nothing else is heard meanwhile.
        """
        if self._echo_due is None:
            self._echo_due = time.monotonic() + _ECHO_SECONDS

    def notify_local(self) -> None:
        """This process committed a change: wake its own waiters at once."""
        self.changes.notify()

    async def wait_for_change(self, timeout: float, since: object | None) -> None:
        """Return after a change newer than `since` (default: now), or at timeout."""
        mark = self.changes.generation if since is None else since
        with anyio.move_on_after(timeout):
            while self.changes.generation == mark:
                if self._reading:
                    await self.changes.event().wait()  # the reader wakes us, or hands over
                else:
                    await self._read_notifications(mark)

    async def _read_notifications(self, mark: object) -> None:
        """Read the LISTEN connection until a notification comes, for every waiter.

        Cancelling this read is safe: the connection is idle in LISTEN, with no query
        in flight. Whoever stops reading wakes the others, so one of them reads next.
        """
        self._reading = True
        try:
            listener = await self._listening()
            if listener is None:
                await anyio.sleep(_RELISTEN_SECONDS)  # the server is down: poll meanwhile
                return
            if self.changes.generation != mark:  # (re)connecting counts as a change
                return
            due = self._echo_due
            budget = None if due is None else max(0.05, due - time.monotonic())
            heard = False
            try:
                async for _ in listener.notifies(timeout=budget, stop_after=1):
                    heard = True
            except (psycopg.Error, OSError):
                self._listener = None
                await listener.close()
                return
            if not heard:  # only after `budget`: a cancelled wait does not get here
                log.warning(
                    "flowz: the LISTEN connection to %s did not hear this worker's own "
                    "notification within %g s: replacing it (polling meanwhile)",
                    self.safe_url(),
                    _ECHO_SECONDS,
                )
                self._listener = None
                await listener.close()
                return
            self._echo_due = None
            self.changes.notify()
        finally:
            self._reading = False
            self.changes.notify_waiters()

    async def _listening(self) -> psycopg.AsyncConnection[Any] | None:
        """The LISTEN connection, listening from first use; None if the server is unreachable."""
        listener = self._listener
        if listener is not None and listener is self._listening_on and not listener.closed:
            return listener
        try:
            with anyio.CancelScope(shield=True):  # a LISTEN half-sent would break it
                if listener is None or listener.closed:
                    listener = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                    self._listener = listener
                await listener.execute(f"LISTEN {CHANNEL}")
        except (psycopg.Error, OSError):
            self._listener = None
            return None
        self._listening_on = listener
        self._echo_due = None  # what was sent before this LISTEN never comes back
        # What changed while nobody listened is for the waiters to look at.
        self.changes.notify()
        return listener


class _Transaction:
    """`async with db.transaction() as cur`: a class, not an async generator.

    The default client of an event loop is closed while the loop finalizes its
    async generators, when no new one may start; closing deregisters its worker
    in a transaction, so this must not be one (a pipelined one uses psycopg's
    pipeline, an async generator: never in a close).
    """

    def __init__(self, db: PgConnector, pipelined: bool = False) -> None:
        self._db = db
        self._pipelined = pipelined
        self._pipeline: AbstractAsyncContextManager[Any] | None = None

    async def __aenter__(self) -> Cursor:
        self._conn = await self._db.checkout()
        self._cur = self._conn.cursor()
        try:
            if self._pipelined:
                self._pipeline = self._conn.pipeline()
                await self._pipeline.__aenter__()
            await self._cur.execute("BEGIN")  # the pool's connections are in autocommit
        except BaseException as exc:
            await self._db.pool.putconn(self._conn)  # the pool rolls back what it gets back
            if isinstance(exc, psycopg.Error):
                raise self._db.error(exc) from exc
            raise
        return self._cur

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._pipeline is None:
                await self._cur.execute("COMMIT" if exc is None else "ROLLBACK")
            elif exc is None:
                await self._cur.execute("COMMIT")
                await self._pipeline.__aexit__(None, None, None)  # sends it, raises errors
            else:  # the pool rolls back what it gets back
                await self._pipeline.__aexit__(kind, exc, tb)
        except psycopg.Error as failed:
            raise self._db.error(failed) from failed
        finally:
            await self._db.pool.putconn(self._conn)
        if isinstance(exc, psycopg.Error):
            raise self._db.error(exc) from exc


class _HasConnector(Protocol):
    db: PgConnector


S = TypeVar("S", bound=_HasConnector)


def retried(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """Run a store method again after a broken connection (the whole transaction)."""

    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.db.retry(lambda: method(self, *args, **kwargs))

    wrapper.__name__, wrapper.__qualname__ = method.__name__, method.__qualname__
    wrapper.__doc__ = method.__doc__
    return wrapper


@asynccontextmanager
async def scratch_database(server_url: str) -> AsyncIterator[str]:
    """The URL of a new, empty database on the server; dropped (connections and all) after."""
    raw = f"flowz_test_{uuid.uuid4().hex[:12]}"
    name = sql.Identifier(raw)
    async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{raw}"))
    finally:
        async with await psycopg.AsyncConnection.connect(server_url, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
