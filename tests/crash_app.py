"""Workflows for the crash tests, run as a script in a subprocess that the tests kill -9.

Usage: python crash_app.py WORKFLOW N RUN_ID. Every step call appends a line to
$CRASH_LOG_DIR/calls.log; with CRASH_HANG_IN set, the named steps touch
$CRASH_LOG_DIR/ready and hang, so the test can kill the process there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio

import flowz
from flowz import gather_durable, step, workflow

LOG_DIR = Path(os.environ.get("CRASH_LOG_DIR", "."))
HANG_IN = os.environ.get("CRASH_HANG_IN", "")


def mark(name: str) -> None:
    with (LOG_DIR / "calls.log").open("a") as log:
        log.write(name + "\n")


async def hang_if(where: str) -> None:
    if where == HANG_IN:
        (LOG_DIR / "ready").touch()
        await anyio.sleep(3600)


@step
async def one(x: int) -> int:
    mark("one")
    return x + 1


@step
async def two(x: int) -> int:
    mark("two")
    return x * 2


@step
async def three(x: int) -> int:
    mark("three-start")
    await hang_if("three")
    mark("three-end")
    return x + 3


@workflow
async def three_steps(x: int) -> int:
    return await three(await two(await one(x)))


@step
async def square(i: int) -> int:
    mark(f"square-{i}")
    if i % 2 == 1:
        await hang_if("children")
    return i * i


@workflow
async def fan(n: int) -> int:
    return sum(await gather_durable(*(square(i) for i in range(n))))


@workflow
async def sleepy(x: int) -> int:
    start = await one(x)
    (LOG_DIR / "ready").touch() if HANG_IN == "sleep" else None
    await flowz.sleep(2.0)
    return await two(start)


@step
async def handle(item: int) -> int:
    mark(f"item-{item}-start")
    if item == 1:
        await hang_if("item")
    mark(f"item-{item}-end")
    return item


@workflow
async def inbox(n: int) -> list[int]:
    return [await handle(await flowz.recv("item")) for _ in range(n)]


#: Which release of `release` runs: "1" (before the patch) or "2" (with it).
RELEASE = os.environ.get("CRASH_RELEASE", "1")


@workflow
async def release(x: int) -> int:
    a = await one(x)
    if RELEASE == "1":
        b = await two(a)
    elif flowz.patched("no-two"):  # release 2 drops the call of two
        b = a
    else:
        b = await two(a)  # what runs recorded by release 1 did
    return await three(b)


if __name__ == "__main__":
    chosen = {
        "three_steps": three_steps,
        "fan": fan,
        "sleepy": sleepy,
        "inbox": inbox,
        "release": release,
    }[sys.argv[1]]
    print(flowz.run(chosen.options(id=sys.argv[3]), int(sys.argv[2])))
