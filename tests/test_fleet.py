"""A fleet of `flowz worker` processes on one PostgreSQL database: kills, races, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import psycopg
import pytest

from flowz import Status
from flowz.store import PostgresStore
from flowz.store._sql import SCHEMA_VERSION
from tests import fleet_app

ROOT = Path(__file__).parents[1]

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def fleet_db(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE fleet_effects (child int, pid int, at timestamptz default now())"
        )
        conn.execute("CREATE TABLE fleet_resumes (parent int, pid int)")
        conn.execute("CREATE TABLE fleet_gate_waits (child int)")
    monkeypatch.setenv("FLOWZ_DATABASE_URL", postgres_url)
    return postgres_url


def start_worker(
    url: str, log: Path, *, lease: float = 2.0, concurrency: int = 16
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FLOWZ_DATABASE_URL": url,
        "FLOWZ_LEASE_SECONDS": str(lease),
        "FLOWZ_CONCURRENCY": str(concurrency),
        "FLOWZ_POLL_SECONDS": "2",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flowz", "worker", "tests.fleet_app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_workers(workers: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc, log in zip(workers, logs, strict=True):
        code = proc.wait(timeout=30)
        assert code in (0, -signal.SIGKILL), log.read_text()[-3000:]


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def wait_until(condition: object, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.05)


def test_killing_one_of_three_workers_loses_nothing(fleet_db: str, tmp_path: Path) -> None:
    n = 500
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]
    workers = [start_worker(fleet_db, log) for log in logs]
    try:

        async def start() -> object:
            return await fleet_app.record_fan.options(id="fleet-kill").start(n, 0.05)

        handle = anyio.run(start)
        # Kill one worker -9 while it holds children.
        wait_until(lambda: query(fleet_db, "SELECT count(*) FROM fleet_effects")[0][0] >= 100)
        victim = workers[0]
        busy = query(
            fleet_db,
            f"SELECT count(*) FROM fleet_effects WHERE pid = {victim.pid}",
        )[0][0]
        assert busy > 0, "the victim ran nothing; the test would prove nothing"
        victim.send_signal(signal.SIGKILL)
        victim.wait()

        assert anyio.run(lambda: handle.result(timeout=120)) == sum(range(n))  # type: ignore[attr-defined]
    finally:
        stop_workers(workers, logs)

    rows = query(fleet_db, "SELECT status, count(*) FROM flowz_executions GROUP BY status")
    assert rows == [("succeeded", n + 1)]
    effects = query(fleet_db, "SELECT child, pid FROM fleet_effects ORDER BY at")
    per_child = Counter(child for child, _ in effects)
    assert set(per_child) == set(range(n)), "every child ran"
    twice = {child for child, count in per_child.items() if count > 1}
    first_pid = {}
    for child, pid in effects:
        first_pid.setdefault(child, pid)
    # Only children the dead worker held ran again, on the others; each at most twice.
    assert twice, "the children the victim held when it died ran again"
    assert all(first_pid[c] == victim.pid for c in twice)
    assert max(per_child.values()) <= 2
    outputs = query(fleet_db, "SELECT output FROM flowz_executions WHERE parent_id = 'fleet-kill'")
    assert sorted(int(o[0]) for o in outputs) == list(range(n))  # type: ignore[call-overload]


def test_each_parent_resumes_exactly_once_when_children_finish_together(
    fleet_db: str, tmp_path: Path
) -> None:
    parents, width = 50, 4
    gate = tmp_path / "gate"
    logs = [tmp_path / f"worker{i}.log" for i in range(4)]
    workers = [start_worker(fleet_db, log, lease=30, concurrency=64) for log in logs]
    try:

        async def start_all() -> list[object]:
            return [
                await fleet_app.race_parent.options(id=f"race-{k}").start(k, width, str(gate))
                for k in range(parents)
            ]

        handles = anyio.run(start_all)
        # Every child is running and blocked on the gate: then they all finish at once.
        wait_until(
            lambda: (
                query(fleet_db, "SELECT count(*) FROM fleet_gate_waits")[0][0] == parents * width
            )
        )
        gate.touch()

        async def results() -> list[int]:
            return [await h.result(timeout=120) for h in handles]  # type: ignore[attr-defined]

        assert anyio.run(results) == [sum(range(width))] * parents
    finally:
        stop_workers(workers, logs)

    starts = Counter(p for (p, _) in query(fleet_db, "SELECT parent, pid FROM fleet_resumes"))
    # One start that fanned out, then exactly one resumption per parent.
    assert starts == Counter({k: 2 for k in range(parents)})
    pids = {pid for (_, pid) in query(fleet_db, "SELECT parent, pid FROM fleet_resumes")}
    assert len(pids) > 1, "the parents ran on several workers"


def test_workers_survive_all_their_connections_being_terminated(
    fleet_db: str, tmp_path: Path
) -> None:
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [start_worker(fleet_db, log) for log in logs]
    dbname = fleet_db.rsplit("/", 1)[1]
    try:

        async def start() -> object:
            return await fleet_app.record_fan.options(id="fleet-term").start(200, 0.02)

        handle = anyio.run(start)
        wait_until(lambda: query(fleet_db, "SELECT count(*) FROM fleet_effects")[0][0] >= 40)
        with psycopg.connect(fleet_db, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            ).fetchone()
        assert killed is not None and killed[0] >= 2
        assert anyio.run(lambda: handle.result(timeout=120)) == sum(range(200))  # type: ignore[attr-defined]
    finally:
        stop_workers(workers, logs)
    assert all(proc.returncode == 0 for proc in workers)


def test_workers_started_together_on_an_empty_database_create_the_schema_once(
    postgres_template: str, tmp_path: Path
) -> None:
    from tests.conftest import POSTGRES_URL, admin_execute, with_database

    name = f"flowz_empty_{os.getpid()}_{int(time.time())}"
    admin_execute(f"CREATE DATABASE {name}")
    url = with_database(POSTGRES_URL, name)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    try:
        workers = [start_worker(url, log) for log in logs]
        wait_until(lambda: all("functions, queue" in log.read_text() for log in logs), 30)
        assert all(proc.poll() is None for proc in workers)
        assert query(url, "SELECT version FROM flowz_schema") == [(SCHEMA_VERSION,)]
        stop_workers(workers, logs)
        assert all(proc.returncode == 0 for proc in workers)
    finally:
        admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_run_no_worker_knows_stays_queued(fleet_db: str, tmp_path: Path) -> None:
    async def enqueue() -> Status:
        store = PostgresStore(fleet_db)
        await store.open()
        from flowz.store._protocol import NewExecution

        await store.create_run(
            NewExecution(id="orphan", root_id="orphan", kind="workflow", name="gone:wf", input={})
        )
        await store.aclose()
        return Status.PENDING

    anyio.run(enqueue)
    logs = [tmp_path / "worker.log"]
    workers = [start_worker(fleet_db, logs[0])]
    try:
        wait_until(lambda: "functions, queue" in logs[0].read_text(), 30)
        time.sleep(0.5)
        assert query(fleet_db, "SELECT status FROM flowz_executions WHERE id = 'orphan'") == [
            ("pending",)
        ]
    finally:
        stop_workers(workers, logs)


def test_a_dead_worker_of_this_host_is_replaced_within_seconds(
    fleet_db: str, tmp_path: Path
) -> None:
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    # A 30 s lease: before, the survivor noticed only at its reaper tick (10 s).
    workers = [start_worker(fleet_db, log, lease=30.0, concurrency=4) for log in logs]
    try:

        async def start() -> str:
            return (await fleet_app.record_fan.options(id="neighbour").start(8, 3.0)).id

        anyio.run(start)
        wait_until(
            lambda: (
                query(
                    fleet_db,
                    "SELECT count(*) FROM flowz_executions WHERE status = 'running' "
                    "AND parent_id IS NOT NULL",
                )[0][0]
                > 0
            )
        )
        [(owner,)] = query(
            fleet_db,
            "SELECT lease_owner FROM flowz_executions WHERE status = 'running' "
            "AND parent_id IS NOT NULL LIMIT 1",
        )
        victim = next(w for w in workers if f":{w.pid}:" in str(owner))
        victim.kill()
        victim.wait()
        killed = time.monotonic()
        wait_until(
            lambda: (
                query(
                    fleet_db,
                    "SELECT count(*) FROM flowz_executions WHERE status = 'running' "
                    f"AND lease_owner = '{owner}'",
                )[0][0]
                == 0
            ),
            seconds=30,
        )
        assert time.monotonic() - killed < 5  # a second's look, not a 10 s reaper tick
    finally:
        stop_workers(workers, logs)
