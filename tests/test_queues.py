"""Queues with fleet-wide limits, on both stores, with real `flowz worker` processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import flowz
from flowz import Client
from tests import queues_app

ROOT = Path(__file__).parents[1]

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.db"
    monkeypatch.setenv("QUEUES_EFFECTS", str(path))
    return path


def start_workers(url: str, count: int, log_dir: Path) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "FLOWZ_DATABASE_URL": url, "FLOWZ_SHUTDOWN_GRACE_SECONDS": "1"}
    workers = []
    for i in range(count):
        with (log_dir / f"worker-{i}.log").open("ab") as out:
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "flowz", "worker", "tests.queues_app"],
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    return workers


@pytest.fixture
def fleet(
    database_url: str, effects: Path, tmp_path: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    workers = start_workers(database_url, 4, tmp_path)
    yield workers
    for proc in workers:
        if proc.poll() is None:
            proc.terminate()
    for proc in workers:
        proc.wait(timeout=30)


def rows(effects: Path, kind: str) -> list[tuple[int, str, float, float | None]]:
    with sqlite3.connect(effects, timeout=30) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS effects (kind TEXT, i INT, pid INT, key TEXT, "
            "started REAL, ended REAL)"
        )
        return db.execute(
            "SELECT pid, key, started, ended FROM effects WHERE kind = ? ORDER BY started", (kind,)
        ).fetchall()


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of spans open at one instant."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


async def run_fan(url: str, kind: str, n: int, seconds: float, run: str = "") -> int:
    async with Client(url) as client:
        fan = queues_app.fan.options(id=f"{kind}-fan{run}")
        handle = await client.start(fan, kind, n, seconds)
        return await handle.result(timeout=150)


async def test_concurrency_holds_across_four_workers(
    database_url: str, effects: Path, fleet: list[subprocess.Popen[bytes]]
) -> None:
    # The limit is only tested across workers if several took part: the worker whose step
    # just ended often claims the freed slot first, so a fan may run on one process alone.
    # Then another fan runs (three fans on one process alone never came up).
    for attempt in range(3):
        if effects.exists():  # the last fan's steps: not this one's
            with sqlite3.connect(effects) as db:
                db.execute("DELETE FROM effects WHERE kind = 'api'")
        assert await run_fan(database_url, "api", 300, 0.02, f"-{attempt}") == sum(range(300))
        done = rows(effects, "api")
        assert len(done) == 300
        assert most_at_once([(r[2], r[3]) for r in done]) <= 3
        if len({r[0] for r in done}) > 1:  # the fleet shared the work
            break
    else:
        raise AssertionError("three fans each ran on one worker: the fleet never shared work")


async def test_per_worker_and_per_partition_hold(
    database_url: str, effects: Path, fleet: list[subprocess.Popen[bytes]]
) -> None:
    assert await run_fan(database_url, "per-worker", 120, 0.02) == sum(range(120))
    done = rows(effects, "per-worker")
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for pid, _, started, ended in done:
        by_pid.setdefault(pid, []).append((started, ended))
    assert max(most_at_once(spans) for spans in by_pid.values()) <= 2
    assert most_at_once([(r[2], r[3]) for r in done]) > 2  # not a fleet-wide limit

    assert await run_fan(database_url, "tenant", 100, 0.02) == sum(range(100))
    done = rows(effects, "tenant")
    by_key: dict[str, list[tuple[float, float]]] = {}
    for _, key, started, ended in done:
        by_key.setdefault(key, []).append((started, ended))
    assert len(by_key) == 5
    assert max(most_at_once(spans) for spans in by_key.values()) == 1
    assert most_at_once([(r[2], r[3]) for r in done]) > 1  # partitions ran side by side


async def test_a_rate_admits_its_limit_per_window(
    database_url: str, effects: Path, fleet: list[subprocess.Popen[bytes]]
) -> None:
    async with Client(database_url) as client:
        handle = await client.start(queues_app.paced_fan.options(id="paced"), 160)
        assert await handle.result(timeout=150) == sum(range(160))
        # When each was admitted: its claim, as the database stamped it.
        children = await client.list_runs(parent="paced", limit=1000)
    assert len(rows(effects, "paced")) == 160
    starts = sorted(c.started.timestamp() for c in children if c.started is not None)
    assert len(starts) == 160
    first = starts[0]
    in_five_seconds = sum(1 for t in starts if t < first + 5.0)
    assert 95 <= in_five_seconds <= 105, in_five_seconds
    # Never more than 20 in any one-second window.
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) <= 20


async def test_priorities_order_the_claims_of_a_queue(database_url: str, effects: Path) -> None:
    from flowz._registry import default_registry
    from flowz._worker import Worker

    async with Client(database_url) as client:
        for i in range(4):
            await client.start(queues_app.in_order.options(id=f"low-{i}"), f"low-{i}")
        for i in range(4):
            urgent = queues_app.in_order.options(id=f"high-{i}", priority=10)
            await client.start(urgent, f"high-{i}")
        worker = Worker(client.store, default_registry(), client.settings)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await client.handle("low-3").result(timeout=60)
            worker.stop()
    order = [key for _, key, _, _ in rows(effects, "serial")]
    assert order[:4] == [f"high-{i}" for i in range(4)]
    assert sorted(order[4:]) == [f"low-{i}" for i in range(4)]


async def test_a_killed_worker_releases_its_slots_when_reaped(
    database_url: str, effects: Path, tmp_path: Path
) -> None:
    [first] = start_workers(database_url, 1, tmp_path)
    async with Client(database_url) as client:
        handle = await client.start(queues_app.fan.options(id="sticky-fan"), "sticky", 8, 60.0)
        with anyio.fail_after(60):
            while len(rows(effects, "sticky")) < 3:  # the queue's three slots are taken
                await anyio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.time()
        Path(str(effects) + ".gate").touch()  # from now on the steps return at once
        assert [
            q.running for q in await client.store.list_queues() if q.limits.name == "test-api"
        ] == [3]
        workers = start_workers(database_url, 2, tmp_path)
        try:
            assert await handle.result(timeout=90) == sum(range(8))
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait(timeout=30)
    done = rows(effects, "sticky")
    spans = [(started, ended if ended is not None else killed_at) for _, _, started, ended in done]
    assert most_at_once(spans) <= 3  # the dead worker's slots came back, never more than 3
    assert len(done) == 8 + 3  # the three it held ran again


def test_bad_queue_definitions_are_refused_with_the_fix() -> None:
    with pytest.raises(flowz.UsageError, match="a limit is a whole number >= 1"):
        flowz.Queue("bad-negative", concurrency=-1)
    with pytest.raises(flowz.UsageError, match="the limit is a whole number >= 1"):
        flowz.Rate(0, per=1)
    with pytest.raises(flowz.UsageError, match="the period is seconds > 0"):
        flowz.Rate(5, per=0)
    with pytest.raises(flowz.UsageError, match="is defined twice with different limits"):
        flowz.Queue("test-api", concurrency=4)
    assert flowz.Queue("test-api", concurrency=3) == queues_app.api  # the same one again
    # A notebook cell run again with new limits redefines the queue.
    cell = "import flowz\nq = flowz.Queue('notebook-queue', concurrency={})"
    for limit in (1, 2):
        namespace = {"__name__": "__main__"}
        exec(cell.format(limit), namespace)
        assert namespace["q"].concurrency == limit  # type: ignore[attr-defined]
    registry = flowz.Registry()
    with pytest.raises(flowz.UsageError, match=r"pass a flowz\.Queue"):

        @flowz.step(queue="test-api", registry=registry)  # type: ignore[arg-type]
        async def wrong(i: int) -> int:
            return i

    assert registry.known() == []
