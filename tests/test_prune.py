"""Retention: prune deletes exactly the old ended trees while workers keep running new work."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import flowz
from flowz import Client, Settings, workflow
from flowz._worker import Worker
from flowz.store._protocol import RunQuery
from tests import cli_app
from tests.test_store_contract import execute_sql

ROOT = Path(__file__).parents[1]
DAY = 86400

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@workflow
async def nobody_runs() -> None:
    """No worker of these tests imports this module's name for it: it stays pending."""


def quiet(wf: flowz.WorkflowFunction, run_id: str) -> flowz.WorkflowFunction:  # type: ignore[type-arg]
    return wf.options(id=run_id, progress=False)


async def wait_until(client: Client, run_id: str, status: str) -> None:
    with anyio.fail_after(30):
        while True:
            mark = client.store.change_mark()
            if (await client.get_run(run_id)).status == status:
                return
            await client.store.wait_for_change(0.5, mark)


async def age_everything(client: Client, seconds: int) -> None:
    """Make every stored execution `seconds` older, as if it had been made then."""
    await execute_sql(
        client.store,
        f"UPDATE flowz_executions SET created_at = created_at - {seconds}, "
        f"finished_at = finished_at - {seconds}",
    )


async def add_old_ended_runs(client: Client, count: int) -> None:
    """`count` succeeded top-level runs, each with a journal entry, in two statements."""
    rows = f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {count - 1}) "
    await execute_sql(
        client.store,
        rows + "INSERT INTO flowz_executions (id, root_id, kind, name, input, status, attempt, "
        "max_attempts, run_at, queue, priority, wait_count, created_at, updated_at, finished_at) "
        "SELECT 'bulk-' || i, 'bulk-' || i, 'workflow', 'bulk', '[]', 'succeeded', 1, 1, 1, "
        "'default', 0, 0, 1000, 1000, 1001 FROM n",
    )
    await execute_sql(
        client.store,
        rows + "INSERT INTO flowz_journal (execution_id, position, kind, name, status, attempt) "
        "SELECT 'bulk-' || i, 0, 'step', 's', 'succeeded', 1 FROM n",
    )


def start_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FLOWZ_DATABASE_URL": url, "FLOWZ_SHUTDOWN_GRACE_SECONDS": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flowz", "worker", "tests.cli_app"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
async def test_prune_deletes_old_ended_trees_while_two_workers_run(
    database_url: str, tmp_path: Path
) -> None:
    async with Client(
        database_url, settings=Settings(database_url=database_url, progress=False)
    ) as client:
        # Old runs in every state.
        for i in range(3):
            await client.run(quiet(cli_app.squares, f"old-ok-{i}"), 4)
        with pytest.raises(Exception, match="3 is unlucky"):
            await client.run(quiet(cli_app.fragile, "old-failed"), 3)
        await client.start(quiet(cli_app.squares, "old-cancelled"), 2)
        await client.handle("old-cancelled").cancel()
        await client.start(quiet(nobody_runs, "old-pending"))
        await client.start(quiet(cli_app.approval, "old-waiting"), "o1")
        await client.start(quiet(cli_app.forever, "old-running"), 2)
        await add_old_ended_runs(client, 1000)

        workers = [start_worker(database_url, tmp_path / f"w{i}.log") for i in range(2)]
        try:
            await wait_until(client, "old-waiting", "waiting")
            await wait_until(client, "old-running", "waiting")  # on its two running children
            await age_everything(client, 2 * DAY)
            old_running_tree = {r.id for r in await client.store.list_executions("old-running")}
            assert len(old_running_tree) == 3

            # New work keeps coming while the old runs are deleted.
            handles = []
            async with anyio.create_task_group() as tg:

                async def feed() -> None:
                    for i in range(20):
                        handles.append(await client.start(quiet(cli_app.squares, f"new-{i}"), 3))

                tg.start_soon(feed)
                deleted = await client.prune(dt.timedelta(days=1))
            assert deleted == 3 + 1 + 1 + 1000  # succeeded, failed, cancelled, bulk
            for handle in handles:
                assert await handle.result(timeout=60) == [0, 1, 4]

            left = {r.id for r in await client.store.list_runs(RunQuery(limit=1000))}
            assert left == {"old-pending", "old-waiting", "old-running"} | {
                f"new-{i}" for i in range(20)
            }
            tree = {r.id for r in await client.store.list_executions("old-running")}
            assert tree == old_running_tree  # a running run's children are never deleted
            assert await client.store.read_journal("old-ok-0") == {}
            assert await client.store.list_executions("old-ok-0") == []
            assert await client.prune(dt.timedelta(days=1), dry_run=True) == 0
            await client.handle("old-running").cancel()
        finally:
            for proc in workers:
                proc.terminate()
            for proc in workers:
                proc.wait(timeout=30)


async def test_prune_dry_run_and_status_filter(database_url: str) -> None:
    async with Client(database_url) as client:
        await client.run(quiet(cli_app.squares, "ok"), 2)
        with pytest.raises(Exception, match="3 is unlucky"):
            await client.run(quiet(cli_app.fragile, "failed"), 3)
        await age_everything(client, 2 * DAY)
        await client.run(quiet(cli_app.squares, "young"), 2)
        week = dt.timedelta(days=7)
        assert await client.prune(dt.timedelta(days=1), dry_run=True) == 2
        assert await client.prune(week, dry_run=True) == 0
        assert await client.prune(dt.timedelta(days=1), status="failed") == 1
        assert {r.id for r in await client.list_runs()} == {"ok", "young"}
        with pytest.raises(flowz.UsageError, match="only ended runs can be pruned"):
            await client.prune(week, status=["succeeded", "running"])
        with pytest.raises(flowz.UsageError, match="not a run status"):
            await client.prune(week, status="done")
        with pytest.raises(flowz.UsageError, match=r"e\.g\. timedelta\(days=30\)"):
            await client.prune(30)  # type: ignore[arg-type]


async def test_workers_with_flowz_retention_prune_on_their_own(database_url: str) -> None:
    async with Client(database_url) as client:
        await client.run(quiet(cli_app.squares, "old"), 2)
        await client.start(quiet(nobody_runs, "waits-forever"))
        await age_everything(client, 2 * DAY)
        await client.run(quiet(cli_app.squares, "young"), 2)
        settings = Settings(database_url=database_url, retention="1d", lease_seconds=0.6)
        worker = Worker(client.store, cli_app.squares.registry, settings)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                while "old" in {r.id for r in await client.list_runs()}:
                    await anyio.sleep(0.1)
                worker.stop()
        assert {r.id for r in await client.list_runs()} == {"waits-forever", "young"}


def test_a_bad_retention_is_refused_with_the_fix() -> None:
    with pytest.raises(flowz.ConfigError, match="FLOWZ_RETENTION='30 days' is not a duration"):
        Settings(retention="30 days")
