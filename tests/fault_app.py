"""The mixed workflow of the fault suite, run by `flowz worker tests.fault_app` subprocesses.

Steps record their side effects (one row per execution attempt) in the side table
`fault_effects` of a SQLite file named by FAULT_EFFECTS_DB, shared by the workers.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import anyio

import flowz
from flowz import gather_durable, step, workflow


def create_effects_db(path: Path) -> Path:
    """The side table the workers' steps write to (FAULT_EFFECTS_DB)."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE fault_effects (kind TEXT, key TEXT, pid INT)")
    return path


def effect(kind: str, key: str) -> None:
    db = sqlite3.connect(os.environ["FAULT_EFFECTS_DB"], timeout=30)
    try:
        db.execute(
            "INSERT INTO fault_effects (kind, key, pid) VALUES (?, ?, ?)", (kind, key, os.getpid())
        )
        db.commit()
    finally:
        db.close()


@step
async def inline(tag: str) -> str:
    effect("inline", tag)
    await anyio.sleep(0.02)
    return tag


@step(retries=3, retry_delay=0.05, backoff=1.0)
async def flaky(tag: str) -> str:
    effect("flaky", tag)
    db = sqlite3.connect(os.environ["FAULT_EFFECTS_DB"], timeout=30)
    try:
        attempts = db.execute(
            "SELECT count(*) FROM fault_effects WHERE kind = 'flaky' AND key = ?", (tag,)
        ).fetchone()[0]
    finally:
        db.close()
    if attempts < 2:
        raise ConnectionError(f"{tag}: first attempt fails")
    return tag


@step
async def child(run: str, i: int) -> int:
    effect("child", f"{run}:{i}")
    await anyio.sleep(0.01 * (i % 5))
    return i * i


@workflow
async def nested(run: str, k: int) -> int:
    return sum(await gather_durable(*(child(run, 100 + j) for j in range(k))))


@workflow
async def mixed(run: str, width: int) -> list[int | str]:
    first = await inline(f"{run}:a")
    squares = await gather_durable(*(child(run, i) for i in range(width)))
    inner = await nested(run, 3)
    retried = await flaky(f"{run}:f")
    await flowz.sleep(1.0)
    last = await inline(f"{run}:b")
    return [first, sum(squares), inner, retried, last]


def expected(run: str, width: int) -> list[int | str]:
    squares = sum(i * i for i in range(width))
    return [f"{run}:a", squares, sum((100 + j) ** 2 for j in range(3)), f"{run}:f", f"{run}:b"]


@step
async def held(tag: str) -> int:
    """Say it started, wait until the test opens this process's gate, return the pid."""
    pid = os.getpid()
    effect("held", f"{tag}:{pid}")
    gate = Path(f"{os.environ['FAULT_EFFECTS_DB']}.gate-{pid}")
    while not gate.exists():  # another process opens it: a file is the event here
        await anyio.sleep(0.05)
    effect("held-done", f"{tag}:{pid}")
    return pid


@workflow
async def gated(tag: str) -> int:
    return await held(tag)
