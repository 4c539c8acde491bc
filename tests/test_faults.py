"""The fault suite: seeded kill -9 of random workers at random moments, on both stores.

Each iteration starts the mixed workflow of tests/fault_app.py (inline steps, a gather of
50 children, a nested workflow child, a retried flaky step, a durable sleep of a second),
kills one of the two worker processes with SIGKILL at a moment chosen from the seed,
restarts it, and checks that nothing was lost or recorded twice. Run longer by hand:
`pytest -m faults --fault-runs 200`.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from flowz import Settings
from flowz.store import open_store
from tests import fault_app

ROOT = Path(__file__).parents[1]
WIDTH = 50

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(900)]


def worker_env(
    url: str, effects_db: Path, *, lease: float = 3, poll: float = 0.5, **more: str
) -> dict[str, str]:
    """The environment of a `flowz worker tests.fault_app` process."""
    return {
        **os.environ,
        "FLOWZ_DATABASE_URL": url,
        "FAULT_EFFECTS_DB": str(effects_db),
        "FLOWZ_LEASE_SECONDS": str(lease),
        "FLOWZ_POLL_SECONDS": str(poll),
        "FLOWZ_CONCURRENCY": "16",
        **more,
    }


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a worker and return once it is up (its signal handlers are in place)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowz", "worker", "tests.fault_app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while f":{proc.pid}:" not in log.read_text() or "functions, queue" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.05)
    return proc


async def check_run(run_id: str, width: int = WIDTH) -> object:
    """The run's result; asserts every execution ended and every journal entry succeeded."""
    store = await open_store(Settings.from_env())
    try:
        rows = await store.list_executions(run_id)
        assert {r.status for r in rows} == {"succeeded"}, [(r.id, r.status) for r in rows]
        # the root, WIDTH children, the nested workflow and its 3 children
        assert len(rows) == 1 + width + 1 + 3
        for row in rows:
            if row.kind == "workflow":
                journal = await store.read_journal(row.id)
                assert all(e.status in ("succeeded", "scheduled") for e in journal.values())
        return next(r for r in rows if r.id == run_id).output
    finally:
        await store.aclose()


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_random_kills_lose_nothing(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: int = request.config.getoption("--fault-runs")
    url = (
        request.getfixturevalue("postgres_url")
        if engine == "postgres"
        else f"sqlite:///{tmp_path / 'faults.db'}"
    )
    effects_db = fault_app.create_effects_db(tmp_path / "effects.db")
    env = worker_env(url, effects_db)
    monkeypatch.setenv("FLOWZ_DATABASE_URL", url)
    monkeypatch.setenv("FLOWZ_POLL_SECONDS", "0.2")
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    workers = [start_worker(env, log) for log in logs]
    figures: Counter[str] = Counter()
    try:
        for seed in range(runs):
            rng = random.Random(seed)
            run_id = f"fault-{seed}"

            async def start(run_id: str = run_id) -> object:
                return await fault_app.mixed.options(id=run_id).start(run_id, WIDTH)

            handle = anyio.run(start)
            # A run is busy for its first ~0.4 s (steps, the gather, the nested child), then
            # sleeps durably for 1 s and resumes: most kills land in the busy part.
            time.sleep(rng.uniform(0.0, 0.4) if rng.random() < 0.6 else rng.uniform(0.4, 1.6))
            victim = rng.randrange(len(workers))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            figures["kills"] += 1
            workers[victim] = start_worker(env, logs[victim])

            async def finish(handle: object = handle) -> object:
                return await handle.result(timeout=120)  # type: ignore[attr-defined]

            expected = fault_app.expected(run_id, WIDTH)
            assert anyio.run(finish) == expected, (seed, logs[victim].read_text()[-2000:])
            assert anyio.run(check_run, run_id) == expected
            if engine == "sqlite":  # killed mid-write, more often than not: still consistent
                with sqlite3.connect(tmp_path / "faults.db") as db:
                    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            figures["runs"] += 1
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in workers]
    assert codes == [0, 0], [log.read_text()[-3000:] for log in logs]

    with sqlite3.connect(effects_db) as db:
        calls = Counter(k + ":" + v for k, v in db.execute("SELECT kind, key FROM fault_effects"))
    # Every effect ran at least once per run; the flaky step twice (it fails once). Re-runs
    # beyond that are the at-least-once side of a kill: the journal still holds one result.
    minimum = 0
    for seed in range(runs):
        run = f"fault-{seed}"
        keys = [f"child:{run}:{i}" for i in [*range(WIDTH), 100, 101, 102]]
        keys += [f"inline:{run}:a", f"inline:{run}:b"]
        assert all(calls[k] >= 1 for k in keys), run
        assert calls[f"flaky:{run}:f"] >= 2, run
        minimum += len(keys) + 2
    figures["side effects re-run after a kill"] = sum(calls.values()) - minimum
    # Executions a killed worker held, put back by the reaper and finished by a live worker.
    figures["resumed executions"] = sum(
        int(m) for log in logs for m in re.findall(r"put back (\d+) execution", log.read_text())
    )
    if runs >= 10:
        assert figures["resumed executions"] > 0, "no kill hit a worker while it held work"
    figures["duplicate results"] = 0  # one row per execution and journal position, checked above
    figures["lost"] = 0
    print(f"\nfault suite ({engine}): " + ", ".join(f"{k} {v}" for k, v in sorted(figures.items())))
