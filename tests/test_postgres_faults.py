"""PostgreSQL faults: the server restarts mid-run, the pool runs dry, one connection for all."""

from __future__ import annotations

import logging
import subprocess
from collections import Counter
from pathlib import Path

import anyio
import pytest

from flowz import Settings, gather_durable, step, workflow
from flowz.errors import StoreUnavailableError
from flowz.store import PostgresStore, open_store
from flowz.store._protocol import NewExecution
from tests import fleet_app
from tests.test_fleet import fleet_db, query, start_worker, stop_workers, wait_until

__all__ = ["fleet_db"]  # a fixture, used by name

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]


@step
async def double(i: int) -> int:
    await anyio.sleep(0.001)
    return 2 * i


@workflow
async def busy(width: int) -> int:
    inline = [await double(i) for i in range(5)]
    children = await gather_durable(*(double(i) for i in range(width)))
    return sum(inline) + sum(children)


@pytest.mark.anyio
async def test_one_pooled_connection_serves_a_worker_running_32_executions_at_once(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every operation takes a connection and gives it back before the next: none waits
    # for a second while holding one, or a pool of one would deadlock here.
    monkeypatch.setenv("FLOWZ_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FLOWZ_POOL_SIZE", "1")
    monkeypatch.setenv("FLOWZ_CONCURRENCY", "32")
    monkeypatch.setenv("FLOWZ_LEASE_SECONDS", "1.5")  # heartbeats compete for the connection
    with anyio.fail_after(120):
        result = await busy.options(progress=False).run(300)
    assert result == 2 * sum(range(5)) + 2 * sum(range(300))


@pytest.mark.anyio
async def test_a_pool_that_runs_dry_says_which_setting_to_change_and_loses_nothing(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url, max_connections=1, acquire_timeout=0.3)
    await store.open()
    try:
        await store.create_run(
            NewExecution(id="kept", root_id="kept", kind="workflow", name="w", input=[1])
        )
        async with store.db.pool.connection():  # another task holds the only connection
            with pytest.raises(StoreUnavailableError, match="FLOWZ_POOL_SIZE") as caught:
                await store.get_execution("kept")
        assert "within 0.3 s" in str(caught.value)
        row = await store.get_execution("kept")
        assert row is not None and row.input == [1]
    finally:
        await store.aclose()


def test_the_pool_size_setting_reaches_the_store(postgres_url: str) -> None:
    async def size() -> int:
        store = await open_store(Settings(database_url=postgres_url, pool_size=3))
        try:
            assert isinstance(store, PostgresStore)
            return store.db.pool.max_size
        finally:
            await store.aclose()

    assert anyio.run(size) == 3


def restart_postgres() -> None:
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.slow
def test_workers_ride_out_a_restart_of_the_postgresql_server(fleet_db: str, tmp_path: Path) -> None:
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [start_worker(fleet_db, log, lease=30) for log in logs]
    try:

        async def start() -> object:
            return await fleet_app.record_fan.options(id="restart").start(200, 0.3)

        handle = anyio.run(start)
        wait_until(lambda: query(fleet_db, "SELECT count(*) FROM fleet_effects")[0][0] >= 40)
        restart_postgres()

        async def result() -> object:
            # Within the lease (30 s): the workers carried on, nothing waited for a reaper.
            return await handle.result(timeout=25)  # type: ignore[attr-defined]

        assert anyio.run(result) == sum(range(200))
    finally:
        stop_workers(workers, logs)
    assert all(proc.returncode == 0 for proc in workers)
    done = {c for (c,) in query(fleet_db, "SELECT child FROM fleet_effects")}
    assert done == set(range(200))
    after = query(
        fleet_db, "SELECT count(*) FROM fleet_effects WHERE at > pg_postmaster_start_time()"
    )[0][0]
    assert isinstance(after, int) and after > 0, "the run ended before the server restarted"


@pytest.mark.anyio
async def test_runs_in_process_never_break_a_connection_when_their_worker_stops(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Stopping used to cancel the worker mid-query: psycopg closed the connection, warned
    # on stderr, and the next run paid for a new one.
    monkeypatch.setenv("FLOWZ_DATABASE_URL", postgres_url)
    with caplog.at_level(logging.WARNING, logger="psycopg"):
        for _ in range(5):
            assert await busy.options(progress=False).run(3) == 2 * sum(range(5)) + 2 * sum(
                range(3)
            )
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []


@pytest.mark.slow
def test_queries_slower_than_three_leases_run_once_among_two_workers(
    fleet_db: str, tmp_path: Path
) -> None:
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    # Leases of 0.5 s, heartbeats every 1/6 s; each pg_sleep lasts 2 s, four leases.
    workers = [start_worker(fleet_db, log, lease=0.5) for log in logs]
    try:

        async def run() -> object:
            handle = await fleet_app.slow_queries.options(id="slow-queries").start(4, 2.0)
            return await handle.result(timeout=60)

        assert anyio.run(run) == -1 + sum(range(4))
    finally:
        stop_workers(workers, logs)
    effects = Counter(c for (c,) in query(fleet_db, "SELECT child FROM fleet_effects"))
    assert effects == Counter({c: 1 for c in range(-1, 4)}), "a step ran twice: a lease was lost"


@pytest.mark.anyio
async def test_a_read_only_database_says_so_and_loses_nothing(postgres_url: str) -> None:
    import psycopg

    from flowz.errors import StoreNotWritableError

    store = PostgresStore(postgres_url)
    await store.open()
    try:
        await store.create_run(
            NewExecution(id="kept", root_id="kept", kind="workflow", name="w", input=[1])
        )
    finally:
        await store.aclose()
    dbname = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # as on a hot standby
        admin.execute(f"ALTER DATABASE {dbname} SET default_transaction_read_only = on")  # type: ignore[arg-type]
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        with pytest.raises(StoreNotWritableError, match="is read-only") as caught:
            await store.create_run(
                NewExecution(id="new", root_id="new", kind="workflow", name="w", input=[2])
            )
        assert "Point FLOWZ_DATABASE_URL at the primary" in str(caught.value)
        row = await store.get_execution("kept")
        assert row is not None and row.input == [1]
        assert await store.get_execution("new") is None
    finally:
        await store.aclose()
