"""A worker whose clock is off by an hour: leases, sleeps and retries follow the database's clock.

PostgreSQL only: SQLite's clock is the host's, shared by every process that opens the file.
"""

from __future__ import annotations

import time
from collections import Counter

import anyio
import psycopg
import pytest

import flowz
from flowz import Settings, step, workflow
from flowz.store import open_store
from flowz.store._protocol import NewExecution

pytestmark = [pytest.mark.postgres, pytest.mark.anyio]

attempts: Counter[str] = Counter()
SLEEP = 1.0
RETRY_DELAY = 1.5  # above the inline limit: the workflow suspends until the retry is due


@step(retries=1, retry_delay=RETRY_DELAY, backoff=1.0)
async def flaky(key: str) -> str:
    attempts[key] += 1
    if attempts[key] == 1:
        raise ConnectionError("first attempt fails")
    return "ok"


@workflow
async def clocked(key: str) -> tuple[str, str]:
    stamp = await flowz.now()
    await flowz.sleep(SLEEP)
    return (stamp.isoformat(), await flaky(key))


def database_now(url: str) -> float:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT extract(epoch from clock_timestamp())::float8").fetchone()
    assert row is not None
    return float(row[0])


@pytest.fixture
def skewed_clock(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> float:
    """Shift this process's wall clock (time.time) by the test's parameter, in seconds."""
    skew: float = request.param
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)
    return skew


@pytest.mark.parametrize("skewed_clock", [3600.0, -3600.0], indirect=True, ids=["ahead", "behind"])
async def test_sleeps_and_retries_wait_as_long_on_a_worker_whose_clock_is_off(
    postgres_url: str, skewed_clock: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWZ_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FLOWZ_POLL_SECONDS", "0.2")
    before = database_now(postgres_url)
    key = f"clock{skewed_clock:+.0f}"
    handle = await clocked.options(id=key).start(key)
    with anyio.fail_after(30):  # an hour ahead, a stored wake-up would be an hour late
        stamp, result = await clocked.options(id=key, progress=False).run(key)
    after = database_now(postgres_url)
    assert result == "ok" and attempts[key] == 2

    # flowz.now() and every stored time are the database's, not this worker's.
    assert before - 5 <= flowz_stamp_seconds(stamp) <= after + 5
    store = await open_store(Settings(database_url=postgres_url))
    try:
        journal = await store.read_journal(handle.id)
    finally:
        await store.aclose()
    sleep_entry, step_entry = journal[1], journal[2]
    assert sleep_entry.started_at is not None and step_entry.started_at is not None
    assert before - 5 <= sleep_entry.started_at <= after + 5
    assert sleep_entry.output == pytest.approx(sleep_entry.started_at + SLEEP)
    # An hour behind, a stored wake-up would be in the past: the sleep would not wait.
    assert step_entry.started_at >= sleep_entry.output - 0.05
    # The first attempt ran right after the sleep; the second waited for the retry delay.
    assert step_entry.attempt == 2
    assert step_entry.started_at - sleep_entry.output >= RETRY_DELAY * 0.8 - 0.05


def flowz_stamp_seconds(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize("skewed_clock", [3600.0], indirect=True, ids=["ahead"])
async def test_a_worker_an_hour_ahead_does_not_take_over_a_live_lease(
    postgres_url: str, skewed_clock: float
) -> None:
    store = await open_store(Settings(database_url=postgres_url))
    try:
        await store.create_run(
            NewExecution(id="held", root_id="held", kind="workflow", name="w", input=None)
        )
        [claim] = await store.claim("owner", ["w"], "default", 1, lease_seconds=30)
        # This process's clock says the 30 s lease ran out an hour ago; the database's does not.
        assert await store.reap([]) == 0
        assert await store.claim("thief", ["w"], "default", 1, lease_seconds=30) == []
        assert abs(claim.now() - database_now(postgres_url)) < 5
    finally:
        await store.aclose()
