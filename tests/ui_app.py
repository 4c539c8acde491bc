"""Workflows the dashboard tests show: runs in every state, an XSS probe, a slow gather.

A real `flowz worker tests.ui_app` runs them in the browser test.
"""

from __future__ import annotations

import datetime as dt

import anyio

import flowz
from flowz import gather_durable, step, workflow

#: What a careless page would run: stored in arguments and in error text.
XSS = '<script>window.__xss = 1</script><img src="x" onerror="window.__xss = 2">'

nobody = flowz.Queue("ui-nobody")
api = flowz.Queue("ui-api", concurrency=4, rate=flowz.Rate(50, per=1))


@step
async def square(x: int) -> int:
    return x * x


@step
async def explode(note: str) -> None:
    raise ValueError(f"refused {note}")


@step(queue=api)
async def fetch(i: int, delay: float) -> int:
    await anyio.sleep(delay)
    return i


@workflow
async def tidy(n: int) -> int:
    return sum(await gather_durable(*(square(i) for i in range(n))))


@workflow
async def breaks(note: str) -> int:
    total = await square(3)
    await gather_durable(explode(note), square(2))
    return total


@workflow
async def waits(topic: str) -> object:
    return await flowz.recv(topic)


@workflow
async def crawl(n: int, delay: float) -> int:
    return len(await gather_durable(*(fetch(i, delay) for i in range(n))))


@workflow(queue=nobody)
async def parked() -> None:
    return None


@workflow(schedule="0 3 * * *", timezone="Europe/Paris")
async def nightly(tick: dt.datetime) -> str:
    return tick.isoformat()
