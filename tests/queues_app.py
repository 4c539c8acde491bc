"""Workflows for the queue tests, run by `flowz worker tests.queues_app` subprocesses.

Each step records when it started and ended, in which process, in a SQLite side
file ($QUEUES_EFFECTS): the tests read the overlaps from there.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import anyio

import flowz
from flowz import gather_durable, step, workflow

api = flowz.Queue("test-api", concurrency=3)
per_worker = flowz.Queue("test-per-worker", per_worker=2)
tenants = flowz.Queue("test-tenants", per_partition=1)
paced = flowz.Queue("test-paced", rate=flowz.Rate(20, per=1))
serial = flowz.Queue("test-serial", concurrency=1)


def record(kind: str, i: int, key: str = "") -> int:
    """Note that a step started; the row's id."""
    with sqlite3.connect(os.environ["QUEUES_EFFECTS"], timeout=30) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS effects (kind TEXT, i INT, pid INT, key TEXT, "
            "started REAL, ended REAL)"
        )
        cur = db.execute(
            "INSERT INTO effects VALUES (?, ?, ?, ?, ?, NULL)",
            (kind, i, os.getpid(), key, time.time()),
        )
        return cur.lastrowid or 0


def ended(row: int) -> None:
    with sqlite3.connect(os.environ["QUEUES_EFFECTS"], timeout=30) as db:
        db.execute("UPDATE effects SET ended = ? WHERE rowid = ?", (time.time(), row))


async def busy(kind: str, i: int, seconds: float, key: str = "") -> int:
    row = record(kind, i, key)
    await anyio.sleep(seconds)
    ended(row)
    return i


@step(queue=api)
async def call_api(i: int, seconds: float) -> int:
    return await busy("api", i, seconds)


@step(queue=per_worker)
async def local_work(i: int, seconds: float) -> int:
    return await busy("per-worker", i, seconds)


@step(queue=tenants, partition=lambda i, seconds: f"tenant-{i % 5}")
async def tenant_work(i: int, seconds: float) -> int:
    return await busy("tenant", i, seconds, f"tenant-{i % 5}")


@step(queue=paced)
async def paced_call(i: int) -> int:
    record("paced", i)
    return i


@step(queue=api)
async def sticky(i: int, seconds: float) -> int:
    """Hangs `seconds` (to be killed there) until the test opens the gate file."""
    gate = Path(os.environ["QUEUES_EFFECTS"] + ".gate")
    return await busy("sticky", i, 0.0 if gate.exists() else seconds)


@workflow(queue=serial)
async def in_order(label: str) -> str:
    record("serial", 0, label)
    return label


@workflow
async def fan(kind: str, n: int, seconds: float) -> int:
    work = {"api": call_api, "per-worker": local_work, "tenant": tenant_work, "sticky": sticky}[
        kind
    ]
    return sum(await gather_durable(*(work(i, seconds) for i in range(n))))


@workflow
async def paced_fan(n: int) -> int:
    return sum(await gather_durable(*(paced_call(i) for i in range(n))))
