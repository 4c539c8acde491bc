"""A scheduled workflow: a report every weekday at 9:00 in Paris, once, whatever the fleet.

`flowz worker examples/scheduled.py` makes one run per tick, with the tick as the
workflow's argument; start it on three machines and each tick still runs once (the
run id is the schedule and the tick). `flowz schedules` lists it with its next
tick; `flowz schedules pause examples.scheduled:morning_report` pauses it.

Run it with `python examples/scheduled.py`: it runs one tick by hand (a scheduled
workflow is a workflow like any other: that is also how to test one).
"""

from __future__ import annotations

import datetime as dt

import anyio

import flowz
from flowz import step, workflow


@step(retries=3)
async def sales_since(start: dt.datetime) -> int:
    return 42  # a query of the sales database


@workflow(schedule="0 9 * * mon-fri", timezone="Europe/Paris", catch_up="latest")
async def morning_report(tick: dt.datetime) -> str:
    sold = await sales_since(tick - dt.timedelta(days=1))
    return f"{tick:%A %d %B, %H:%M}: {sold} sold since the day before"


async def main() -> None:
    async with flowz.Client() as client:
        tick = dt.datetime(2026, 12, 4, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET"))
        run = morning_report.options(id=f"report-by-hand-{tick:%Y%m%d}", progress=False)
        print(await client.run(run, tick))


if __name__ == "__main__":
    anyio.run(main)
