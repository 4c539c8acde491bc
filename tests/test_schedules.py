"""Cron schedules: one run per tick across workers, catch-up after downtime, bad input."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import anyio
import pytest

import flowz
from flowz import Registry, workflow
from flowz._worker import Worker
from flowz.testing import temp_client

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

EVERY_MINUTE = Registry()


@workflow(schedule="* * * * *", registry=EVERY_MINUTE, name="cron:minutely")
async def minutely(tick: dt.datetime) -> str:
    return tick.isoformat()


@workflow(registry=EVERY_MINUTE, name="cron:plain")
async def plain() -> int:
    return 1


CATCH_UP = Registry()


@workflow(schedule="* * * * *", catch_up="all", registry=CATCH_UP, name="cron:all")
async def catch_all(tick: dt.datetime) -> str:
    return tick.isoformat()


@workflow(schedule="* * * * *", catch_up="latest", registry=CATCH_UP, name="cron:latest")
async def catch_latest(tick: dt.datetime) -> str:
    return tick.isoformat()


@workflow(schedule="* * * * *", catch_up="none", registry=CATCH_UP, name="cron:none")
async def catch_none(tick: dt.datetime) -> str:
    return tick.isoformat()


def ticks_of(runs: list[flowz.RunInfo]) -> list[dt.datetime]:
    return sorted(dt.datetime.fromisoformat(r.id.partition("@")[2]) for r in runs)


async def all_runs(client: flowz.Client, name: str) -> list[flowz.RunInfo]:
    return list(await client.list_runs(name=name, limit=1000))


async def work_until(client: flowz.Client, registry: Registry, workers: int, done: Any) -> None:
    """Run `workers` workers of `registry` on the client's store until `done()` is true."""
    settings = client.settings
    fleet = [Worker(client.store, registry, settings) for _ in range(workers)]
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for worker in fleet:
                tg.start_soon(worker.run)
            while not await done():
                mark = client.store.change_mark()
                await client.store.wait_for_change(0.2, mark)
            for worker in fleet:
                worker.stop()


async def test_three_workers_make_one_run_per_tick_for_fifty_ticks() -> None:
    async with temp_client(skip_time=True) as client:

        async def fifty_done() -> bool:
            runs = await all_runs(client, "cron:minutely")
            return sum(r.status == "succeeded" for r in runs) >= 50

        await work_until(client, EVERY_MINUTE, 3, fifty_done)
        runs = await all_runs(client, "cron:minutely")
        ticks = ticks_of(runs)
        assert len(ticks) == len(set(ticks)) >= 50  # each tick once
        assert all(b - a == dt.timedelta(minutes=1) for a, b in itertools.pairwise(ticks))
        assert all(t.second == 0 and t.tzinfo is not None for t in ticks)
        done = [r for r in runs if r.status == "succeeded"]
        handle = client.handle(done[0].id, minutely)
        assert await handle.result() == done[0].id.partition("@")[2]  # the tick, passed in
        [row] = await client.store.list_schedules()
        assert (row.name, row.cron, row.catch_up, row.paused) == (
            "cron:minutely",
            "* * * * *",
            "latest",
            False,
        )


async def test_catch_up_decides_which_missed_ticks_run() -> None:
    async with temp_client(skip_time=True) as client:
        clock = client.store.clock  # type: ignore[attr-defined]

        async def two_ticks_each() -> bool:
            counts = [len(await all_runs(client, f"cron:{p}")) for p in ("all", "latest", "none")]
            return min(counts) >= 2

        await work_until(client, CATCH_UP, 1, two_ticks_each)
        before = {p: len(await all_runs(client, f"cron:{p}")) for p in ("all", "latest", "none")}
        clock.skipped += 10 * 60 + 30  # ten and a half minutes with no worker up
        restart = dt.datetime.fromtimestamp(clock.now(), dt.UTC)

        async def caught_up() -> bool:
            runs = await all_runs(client, "cron:all")
            return sum(r.status == "succeeded" for r in runs) >= before["all"] + 10

        await work_until(client, CATCH_UP, 1, caught_up)
        missed = {
            p: [t for t in ticks_of(await all_runs(client, f"cron:{p}")) if t <= restart][
                before[p] :
            ]
            for p in ("all", "latest", "none")
        }
        assert len(missed["all"]) == 10  # every missed minute
        assert len(missed["latest"]) == 1 and missed["latest"][0] == missed["all"][-1]
        assert missed["none"] == []


async def test_a_paused_schedule_makes_no_runs_until_resumed() -> None:
    async with temp_client(skip_time=True) as client:

        async def one_run() -> bool:
            return len(await all_runs(client, "cron:minutely")) >= 1

        await work_until(client, EVERY_MINUTE, 1, one_run)
        assert await client.store.pause_schedule("cron:minutely", True)
        count = len(await all_runs(client, "cron:minutely"))
        clock = client.store.clock  # type: ignore[attr-defined]
        clock.skipped += 5 * 60
        paused_until = clock.now()

        async def ticks_passed_over() -> bool:
            [row] = await client.store.list_schedules()
            return row.last_tick is not None and row.last_tick >= paused_until - 60

        await work_until(client, EVERY_MINUTE, 1, ticks_passed_over)
        assert len(await all_runs(client, "cron:minutely")) == count  # none while paused

        assert await client.store.pause_schedule("cron:minutely", False)
        await work_until(client, EVERY_MINUTE, 1, lambda: _more_than(client, count))
        ticks = ticks_of(await all_runs(client, "cron:minutely"))
        assert all(t.timestamp() > paused_until for t in ticks[count:])  # no backfill
        assert not await client.store.pause_schedule("no-such-schedule", False)


async def _more_than(client: flowz.Client, count: int) -> bool:
    return len(await all_runs(client, "cron:minutely")) > count


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schedule": "every minute"}, "is not a cron expression"),
        ({"schedule": "61 * * * *"}, "is not a cron expression"),
        ({"schedule": "* * * * *", "timezone": "Mars/Olympus"}, "is not a known time zone"),
        ({"schedule": "* * * * *", "catch_up": "some"}, "catch_up='some': use 'latest'"),
    ],
)
def test_bad_schedules_are_refused_at_decoration(options: dict[str, Any], message: str) -> None:
    registry = Registry()
    with pytest.raises(flowz.UsageError, match=message):

        @workflow(registry=registry, **options)
        async def report(tick: dt.datetime) -> None: ...

    assert registry.known() == []  # nothing registered


def test_a_scheduled_workflow_must_take_the_tick() -> None:
    with pytest.raises(flowz.UsageError, match="must take the tick as its one argument"):

        @workflow(schedule="* * * * *", registry=Registry())
        async def report() -> None: ...

    @flowz.cron("0 9 * * mon-fri", timezone="Europe/Paris", registry=Registry())
    async def morning(tick: dt.datetime) -> str:
        return str(tick)

    assert morning.definition.options.schedule is not None


def test_ticks_follow_the_time_zone_across_daylight_saving() -> None:
    from flowz._queues import Schedule

    paris = Schedule("30 2 * * *", timezone="Europe/Paris")
    spring = [t.isoformat() for t in itertools.islice(
        paris.ticks(dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC)), 2)]  # fmt: skip
    assert spring == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]  # once
    autumn = [t.isoformat() for t in itertools.islice(
        paris.ticks(dt.datetime(2026, 10, 24, 12, tzinfo=dt.UTC)), 2)]  # fmt: skip
    assert autumn == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]  # once


async def test_the_worker_inside_client_run_starts_no_scheduled_runs() -> None:
    async with temp_client(skip_time=True) as client:
        assert await client.run(plain.options(progress=False)) == 1
        assert await client.store.list_schedules() == []
        assert await all_runs(client, "cron:minutely") == []
