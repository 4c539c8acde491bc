"""The soak: a random mix of runs on PostgreSQL while workers are killed and restarted.

By hand only (never in CI): `pytest -m soak --soak-minutes 30`. Three `flowz worker`
processes run the fault suite's workflows (tests/fault_app.py: inline steps, gathers of
random width, a nested workflow, a flaky step, a durable sleep) for the given time. Two
of them are killed (`kill -9`, or stopped with SIGTERM) at random moments and restarted;
the third is never touched, so its memory tells whether a long-lived worker leaks. At the
end every run must have its expected result and nothing may be left pending, running or
waiting; the worker's RSS must not have grown by 20% or more, and the server's
connections must be back to what a fleet of three uses.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import anyio
import anyio.to_thread
import psycopg
import pytest

from tests import fault_app
from tests.test_faults import start_worker, worker_env

pytestmark = [pytest.mark.soak, pytest.mark.postgres, pytest.mark.timeout(0)]

IN_FLIGHT = 8  # runs started and not yet ended, at any time
POOL_SIZE = 10


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def connections(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_soak(
    postgres_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    minutes: float = request.config.getoption("--soak-minutes")
    rng = random.Random(os.environ.get("FLOWZ_SOAK_SEED", "soak"))
    effects_db = fault_app.create_effects_db(tmp_path / "effects.db")
    env = worker_env(postgres_url, effects_db, FLOWZ_POOL_SIZE=str(POOL_SIZE))
    monkeypatch.setenv("FLOWZ_DATABASE_URL", postgres_url)
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    workers = [start_worker(env, log) for log in logs]
    figures: Counter[str] = Counter()
    samples: dict[str, int] = {}
    deadline = time.monotonic() + minutes * 60
    warm_at = time.monotonic() + min(60.0, minutes * 60 / 5)

    async def one_run(n: int) -> None:
        run_id = f"soak-{n}"
        if rng.random() < 0.8:
            width = rng.randint(5, 60)
            handle = await fault_app.mixed.options(id=run_id).start(run_id, width)
            expected: object = fault_app.expected(run_id, width)
        else:
            k = rng.randint(1, 20)
            handle = await fault_app.nested.options(id=run_id).start(run_id, k)
            expected = sum((100 + j) ** 2 for j in range(k))
        assert await handle.result(timeout=600) == expected, run_id
        figures["runs completed"] += 1

    async def keep_runs_going() -> None:
        slots = anyio.Semaphore(IN_FLIGHT)

        async def run_in_slot(n: int) -> None:
            try:
                await one_run(n)
            finally:
                slots.release()

        async with anyio.create_task_group() as runs:
            n = 0
            while time.monotonic() < deadline:
                await slots.acquire()
                runs.start_soon(run_in_slot, n)
                n += 1
                if "rss start" not in samples and time.monotonic() > warm_at:
                    samples["rss start"] = rss_kib(workers[0].pid)
                    samples["connections start"] = connections(postgres_url)

    async def kill_and_restart() -> None:
        while time.monotonic() < deadline:
            await anyio.sleep(rng.uniform(2, 12))
            victim = rng.choice([1, 2])  # worker 0 lives the whole soak
            if rng.random() < 0.8:
                workers[victim].send_signal(signal.SIGKILL)
                figures["kill -9"] += 1
            else:
                workers[victim].send_signal(signal.SIGTERM)
                figures["SIGTERM"] += 1
            await anyio.to_thread.run_sync(workers[victim].wait)
            workers[victim] = await anyio.to_thread.run_sync(start_worker, env, logs[victim])

    async def soak() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(kill_and_restart)
            await keep_runs_going()  # returns when every run it started has ended

    try:
        anyio.run(soak)
        samples["rss end"] = rss_kib(workers[0].pid)
        samples["connections end"] = connections(postgres_url)
        with psycopg.connect(postgres_url) as conn:
            left = conn.execute(
                "SELECT status, count(*) FROM flowz_executions "
                "WHERE status IN ('pending', 'running', 'waiting') GROUP BY status"
            ).fetchall()
            figures["executions"] = conn.execute(
                "SELECT count(*) FROM flowz_executions"
            ).fetchone()[0]  # type: ignore[index]
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in workers]
    figures["resumed executions"] = sum(
        int(line.split("put back ")[1].split()[0])
        for log in logs
        for line in log.read_text().splitlines()
        if "put back " in line and "execution(s)" in line
    )
    growth = samples["rss end"] / samples["rss start"] - 1
    report = (
        f"soak of {minutes:g} min on PostgreSQL: "
        + ", ".join(f"{k} {v}" for k, v in sorted(figures.items()))
        + f"; worker RSS {samples['rss start'] / 1024:.1f} -> {samples['rss end'] / 1024:.1f} MiB"
        + f" ({growth:+.1%}); connections {samples['connections start']} -> "
        + f"{samples['connections end']}; left pending/running/waiting: {dict(left) or 0}"
    )
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\n" + report)
    (tmp_path / "soak-report.txt").write_text(report + "\n")
    assert codes == [0, 0, 0], [log.read_text()[-3000:] for log in logs]
    assert left == [], report
    assert growth < 0.20, report
    # Three workers, each with its pool and its LISTEN connection: nothing leaked.
    assert samples["connections end"] <= 3 * (POOL_SIZE + 1), report
