"""Network faults between workers and PostgreSQL, through the proxy of tests/netproxy.py.

Real `flowz worker` processes connect through a proxy that adds latency, resets
connections in the middle of a gather's batch insert or of a batched finish, drops the
LISTEN connection silently, or blackholes a worker longer than its lease while its step
runs. Each scenario runs the mixed workflow of the fault suite (or a gated one) and
checks the side table of effects and the journal: nothing lost, nothing duplicated,
and a worker that lost its lease never writes again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest

from tests import fault_app
from tests.netproxy import FaultyProxy, wait_for
from tests.test_faults import check_run, start_worker, worker_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(240)]

WIDTH = 20


@pytest.fixture
def effects_db(tmp_path: Path) -> Path:
    return fault_app.create_effects_db(tmp_path / "effects.db")


@pytest.fixture
def direct_url(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test's own client talks to PostgreSQL directly; workers go through proxies."""
    monkeypatch.setenv("FLOWZ_DATABASE_URL", postgres_url)
    monkeypatch.setenv("FLOWZ_POLL_SECONDS", "0.2")
    return postgres_url


@pytest.fixture
def proxy(direct_url: str) -> Iterator[FaultyProxy]:
    with FaultyProxy(urlsplit(direct_url).port or 5432) as running:
        yield running


@contextmanager
def running_workers(
    envs: list[dict[str, str]], tmp_path: Path
) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    tmp_path.mkdir(exist_ok=True)
    try:
        for i, env in enumerate(envs):
            log = tmp_path / f"w{i}.log"
            started.append((start_worker(env, log), log))
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc, _ in started]
    assert codes == [0] * len(codes), [log.read_text()[-3000:] for _, log in started]


def start_and_wait(run_id: str, timeout: float = 120) -> object:
    async def go() -> object:
        handle = await fault_app.mixed.options(id=run_id).start(run_id, WIDTH)
        return await handle.result(timeout=timeout)

    return anyio.run(go)


def effects(effects_db: Path) -> Counter[str]:
    with sqlite3.connect(effects_db) as db:
        return Counter(f"{k}:{v}" for k, v in db.execute("SELECT kind, key FROM fault_effects"))


def assert_ran_once(effects_db: Path, run: str) -> None:
    """Every child and inline step of the mixed run ran exactly once; the flaky one twice."""
    calls = effects(effects_db)
    keys = [f"child:{run}:{i}" for i in [*range(WIDTH), 100, 101, 102]]
    keys += [f"inline:{run}:a", f"inline:{run}:b"]
    assert {k: calls[k] for k in keys} == {k: 1 for k in keys}
    assert calls[f"flaky:{run}:f"] == 2


def check_mixed(run_id: str, effects_db: Path, *, once: bool = True) -> None:
    assert start_and_wait(run_id) == fault_app.expected(run_id, WIDTH)
    assert anyio.run(check_run, run_id, WIDTH) == fault_app.expected(run_id, WIDTH)
    if once:
        assert_ran_once(effects_db, run_id)


def test_50_ms_of_latency_on_every_statement_only_slows_runs_down(
    proxy: FaultyProxy, effects_db: Path, tmp_path: Path
) -> None:
    proxy.latency = 0.05
    env = worker_env(proxy.url(os.environ["FLOWZ_DATABASE_URL"]), effects_db)
    with running_workers([env, env], tmp_path):
        check_mixed("slow", effects_db)


@pytest.mark.parametrize("deliver", [True, False], ids=["committed-unheard", "never-sent"])
def test_a_reset_in_a_gathers_batch_insert_duplicates_and_loses_nothing(
    proxy: FaultyProxy, effects_db: Path, tmp_path: Path, deliver: bool
) -> None:
    # The children's insert (one unnest statement), then the commit of its transaction.
    proxy.reset_on(b"AS t(i, r, p, pos, ci, k", then=b"COMMIT", deliver=deliver)
    env = worker_env(proxy.url(os.environ["FLOWZ_DATABASE_URL"]), effects_db)
    with running_workers([env, env], tmp_path):
        check_mixed("gather-reset", effects_db)
    assert proxy.fired() == 1


@pytest.mark.parametrize("deliver", [True, False], ids=["committed-unheard", "never-sent"])
def test_a_reset_in_a_batched_finish_duplicates_and_loses_nothing(
    proxy: FaultyProxy, effects_db: Path, tmp_path: Path, deliver: bool
) -> None:
    proxy.reset_on(
        b"UPDATE flowz_executions SET status = $1, output = $2", then=b"COMMIT", deliver=deliver
    )
    env = worker_env(proxy.url(os.environ["FLOWZ_DATABASE_URL"]), effects_db)
    with running_workers([env, env], tmp_path):
        check_mixed("finish-reset", effects_db)
    assert proxy.fired() == 1


def test_a_silently_dropped_listen_connection_is_noticed_and_replaced(
    proxy: FaultyProxy, effects_db: Path, tmp_path: Path
) -> None:
    env = worker_env(proxy.url(os.environ["FLOWZ_DATABASE_URL"]), effects_db, poll=1.0)
    with running_workers([env], tmp_path):
        wait_for(lambda: proxy.count_sent(b"LISTEN") == 1, what="the worker listens")
        proxy.blackhole(sent=b"LISTEN")  # open, and deaf: no FIN, no RST, nothing
        # Wake-ups still come: the worker polls every second (the run sleeps, gathers).
        check_mixed("deaf", effects_db)
        # Its own commits never echoed back on the LISTEN connection: it listens anew.
        wait_for(lambda: proxy.count_sent(b"LISTEN") >= 2, 30, "a new LISTEN connection")
        check_mixed("hearing-again", effects_db)


@contextmanager
def healed(proxy: FaultyProxy) -> Iterator[None]:
    """Heal the proxy on the way out, even after a failure, so its workers can stop."""
    try:
        yield
    finally:
        proxy.heal()


def test_a_blackholed_worker_loses_its_lease_and_its_late_write_is_refused(
    proxy: FaultyProxy, effects_db: Path, tmp_path: Path
) -> None:
    url = os.environ["FLOWZ_DATABASE_URL"]
    lease = 2.0
    gate = f"{effects_db}.gate-{{}}"

    def started_by(pid: int) -> bool:
        return any(k.startswith("held:") and k.endswith(f":{pid}") for k in effects(effects_db))

    async def start() -> object:
        return await fault_app.gated.options(id="partitioned").start("p")

    with running_workers([worker_env(proxy.url(url), effects_db, lease=lease)], tmp_path) as first:
        [(a, a_log)] = first
        handle = anyio.run(start)
        wait_for(lambda: started_by(a.pid), what="the first worker runs the step")
        proxy.blackhole()  # worker A keeps running, and reaches nobody
        with (
            healed(proxy),
            running_workers([worker_env(url, effects_db, lease=lease)], tmp_path / "b") as second,
        ):
            [(b, _)] = second
            # A's lease lapses; B reaps it, takes the run over, and runs the step again.
            wait_for(lambda: started_by(b.pid), 30, "the second worker takes the run over")
            Path(gate.format(b.pid)).touch()

            async def result() -> object:
                return await handle.result(timeout=60)  # type: ignore[attr-defined]

            assert anyio.run(result) == b.pid
            # A's step ends inside the partition: its journal write (one fenced statement)
            # is let through alone, so it reaches the server before anything else could
            # tell A it lost the run (its heartbeat, its look for lost work): only the
            # fence stops it.
            write = b"WITH fenced AS"
            proxy.watch(write)
            proxy.let_through(write)
            Path(gate.format(a.pid)).touch()
            wait_for(lambda: proxy.answered(write) > 0, 30, "the server answers A's late write")
            proxy.heal()
            wait_for(lambda: "lost its lease" in a_log.read_text(), 30, "A says it lost the run")

            async def journal() -> object:
                from flowz import Settings
                from flowz.store import open_store

                store = await open_store(Settings(database_url=url))
                try:
                    row = await store.get_execution("partitioned")
                    entries = await store.read_journal("partitioned")
                    return row.output if row else None, [e.output for e in entries.values()]
                finally:
                    await store.aclose()

            # The late write was refused: what is journaled is B's, and stays so.
            assert anyio.run(journal) == (b.pid, [b.pid])
            # A is healthy after the partition: it runs new work.
            check_mixed("after-partition", effects_db)
