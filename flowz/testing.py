"""Test helpers: a client on a fresh temporary database, and a clock that skips waiting.

Examples:
    >>> from flowz.testing import temp_client
    >>> async def test_onboarding() -> None:
    ...     async with temp_client(skip_time=True) as client:
    ...         # flowz.sleep(7 * 86400) inside returns at once; flowz.now() moved a week
    ...         assert await client.run(onboarding, "ada@example.com") == "welcomed"
"""

from __future__ import annotations

import datetime as _dt
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ._client import Client
from ._clock import SkippingClock
from ._config import Settings
from ._context import DurableFunction
from ._registry import Registry, default_registry
from ._replay import ReplayReport, ReplayResult, replay_execution
from ._types import Kind
from .errors import RunNotFoundError, UsageError
from .store._protocol import ExecutionRow

__all__ = ["ReplayReport", "ReplayResult", "SkippingClock", "replay", "temp_client"]


@asynccontextmanager
async def temp_client(
    *, postgres: str | None = None, skip_time: bool = False, **settings: Any
) -> AsyncIterator[Client]:
    """A `flowz.Client` on a new, empty database that is deleted afterwards.

    Args:
        postgres: a PostgreSQL server URL whose user may create databases: the test
            gets a database of its own there, dropped at the end. Default: a SQLite
            file in a temporary folder.
        skip_time: time jumps ahead whenever nothing is running, so durable sleeps
            and long retry delays end at once while `flowz.now()` advances by the
            skipped time (SQLite only).
        settings: other `flowz.Settings` fields (the live view is off unless
            `progress=True`).

    Nothing reads or changes `os.environ`; the client's runs use an in-process
    worker, as `client.run()` always does.
    """
    settings.setdefault("progress", False)
    settings.setdefault("poll_seconds", 0.2)
    clock = SkippingClock() if skip_time else None
    if postgres is not None:
        if skip_time:
            raise UsageError(
                "skip_time works with the SQLite test store only (PostgreSQL keeps the "
                "server's clock): drop postgres= or skip_time=True"
            )
        from .store._pg_connection import scratch_database  # psycopg: the [postgres] extra

        async with (
            scratch_database(postgres) as url,
            Client(settings=Settings(database_url=url, **settings)) as client,
        ):
            yield client
        return
    with tempfile.TemporaryDirectory(prefix="flowz-test-") as folder:
        url = f"sqlite:///{Path(folder) / 'flowz.db'}"
        async with Client(settings=Settings(database_url=url, **settings), clock=clock) as client:
            yield client


async def replay(
    client: Client,
    *,
    runs: Sequence[str] = (),
    name: str | DurableFunction[Any, Any] | None = None,
    since: _dt.datetime | _dt.timedelta | None = None,
    limit: int = 1000,
    registry: Registry | None = None,
) -> ReplayReport:
    """Replay recorded runs with the code as it is now; report those it would break.

    Each workflow body runs against its run's journal (and each child workflow's
    against its own): durable calls return what they recorded, no step runs and
    nothing is written. A call that differs from the journal is reported with both
    names, as the NonDeterminismError the run would raise after a deploy. Import
    the workflows' modules first; they register with `registry` (default: the one
    decorators use).

    Args:
        client: an open client of the database whose runs to check.
        runs: these run ids; else the newest top-level runs, filtered by:
        name: the workflow (a decorated function, or its journal name).
        since: runs created since this aware datetime, or this long ago.
        limit: at most this many top-level runs.
        registry: the code to check.

    Examples:
        >>> async with flowz.Client(os.environ["FLOWZ_DATABASE_URL"]) as client:
        ...     report = await replay(client, since=timedelta(days=7))
        >>> assert report.ok, report.describe()
    """
    registry = registry or default_registry()
    roots: list[ExecutionRow] = []
    for run_id in runs:
        row = await client.store.get_execution(run_id)
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r} to replay: see `flowz list`")
        roots.append(row)
    if not runs:
        ids: list[str] = []
        cursor = None
        while len(ids) < limit:
            page = await client.list_runs(
                name=name, since=since, limit=min(limit - len(ids), 1000), cursor=cursor
            )
            ids += [run.id for run in page]
            if (cursor := page.next_cursor) is None:
                break
        roots = [row for run_id in ids if (row := await client.store.get_execution(run_id))]
    results: list[ReplayResult] = []
    for root in roots:
        tree = [root] + [
            row
            for row in await client.store.list_executions(root.root_id)
            if row.kind == Kind.WORKFLOW and row.id.startswith(root.id + "/")
        ]
        for row in tree:
            results.append(await replay_execution(client.store, registry, row))
    return ReplayReport(results)
