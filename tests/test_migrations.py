"""A database made by flowz 0.1 (schema v1) is refused, upgraded in place, and its run finishes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import flowz
import flowz.store
import flowz.testing
from flowz.store import Store
from tests.cli_app import squares
from tests.conftest import ENGINES, POSTGRES_URL, admin_execute, with_database
from tests.test_cli import flowz as run_flowz

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(params=ENGINES)
def v1_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database holding the v1 fixture: its schema, and one pending run."""
    script = FIXTURES / f"schema_v1_{request.param.replace('postgres', 'postgresql')}.sql"
    if request.param == "sqlite":
        path = tmp_path / "v1.db"
        with sqlite3.connect(path) as db:
            db.executescript(script.read_text())
        yield f"sqlite:///{path}"
        return
    import psycopg

    name = f"flowz_v1_{uuid.uuid4().hex[:12]}"
    admin_execute(f"CREATE DATABASE {name}")
    url = with_database(POSTGRES_URL, name)
    try:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(script.read_text())  # type: ignore[call-overload]
        yield url
    finally:
        admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def flowz_command(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_flowz({**os.environ, "FLOWZ_DATABASE_URL": url, "FLOWZ_PROGRESS": "0"}, *args)


async def index_names(store: Store) -> set[str]:
    """The flowz indexes, and the columns of the tables later versions added (`table.column`)."""
    from flowz.store import PostgresStore, SqliteStore

    tables = ("flowz_workers", "flowz_messages", "flowz_events", "flowz_streams")
    if isinstance(store, SqliteStore):
        rows = store._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        found = {r[0] for r in rows if r[0].startswith(("ix_", "ux_"))}
        for table in tables:
            columns = store._db.execute(f"SELECT name FROM pragma_table_info('{table}')")
            found |= {f"{table}.{c[0]}" for c in columns}
        return found
    assert isinstance(store, PostgresStore)
    rows = await store.db.select(
        "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_%%' OR indexname LIKE 'ux_%%' "
        "UNION ALL SELECT table_name || '.' || column_name FROM information_schema.columns "
        "WHERE table_name = ANY(%s)",
        (list(tables),),
    )
    return {r[0] for r in rows}


@pytest.mark.slow
def test_a_v1_database_is_upgraded_in_place_and_its_run_finishes(
    v1_database: str, tmp_path: Path
) -> None:
    flowz.store._current.clear()
    # Workers and clients refuse it with one line naming the command.
    refused = flowz_command(v1_database, "worker", "tests.cli_app")
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(
        "run `flowz db upgrade` (with the same FLOWZ_DATABASE_URL)"
    )
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "needs v8" in flowz_command(v1_database, "status", "v1-run").stderr

    async def client_open() -> None:
        async with flowz.Client(v1_database):
            pass

    with pytest.raises(flowz.SchemaVersionError, match="has schema v1 and this flowz needs v8"):
        anyio.run(client_open)

    upgraded = flowz_command(v1_database, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.splitlines() == [
        "v2: index ix_flowz_executions_runs: list top-level runs newest first without a scan",
        "v3: flowz_workers.queue and .names: say which worker could take a waiting run",
        "v4: flowz_messages, flowz_events and flowz_streams: talk to running workflows; "
        "flowz_executions.deadline",
        "v5: indexes for list_runs pages (newest first, by status, by name) and for prune",
        "v6: queues with fleet-wide limits (flowz_queues, flowz_queue_starts, "
        "flowz_executions.partition_key) and cron schedules (flowz_schedules)",
        "v7: flowz_executions.trace_context: one OpenTelemetry trace from the caller of start() "
        "to every child, across processes; ix_flowz_executions_parent without top-level runs",
        "v8: ix_flowz_executions_claim in the claim's order (priority descending): a claim no "
        "longer sorts every pending execution",
        "schema at v8",
    ]
    again = flowz_command(v1_database, "db", "upgrade")
    assert again.stdout.strip() == "schema at v8: nothing to do"

    async def finish_the_old_run() -> tuple[list[int], set[str], set[str]]:
        async with flowz.Client(v1_database) as client:
            result = await client.run(squares.options(id="v1-run", progress=False), 5)
            upgraded_indexes = await index_names(client.store)
        fresh = f"sqlite:///{tmp_path / 'fresh.db'}" if v1_database.startswith("sqlite") else None
        if fresh is None:
            async with flowz.testing.temp_client(postgres=POSTGRES_URL) as other:
                return result, upgraded_indexes, await index_names(other.store)
        async with flowz.Client(fresh) as other:
            return result, upgraded_indexes, await index_names(other.store)

    result, upgraded_indexes, fresh_indexes = anyio.run(finish_the_old_run)
    assert result == [0, 1, 4, 9, 16]  # the pending run of the old database, run to the end
    assert upgraded_indexes == fresh_indexes  # an upgraded database is a new one
    assert {
        "flowz_workers.queue",
        "flowz_messages.seq",
        "ux_flowz_messages_key",
    } <= upgraded_indexes
