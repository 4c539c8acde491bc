"""Workflows for the fleet tests, run by `flowz worker tests.fleet_app` subprocesses.

Steps record their side effects in tables of the test's own PostgreSQL database
(FLOWZ_DATABASE_URL), with the pid of the worker that ran them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import psycopg

from flowz import gather_durable, step, workflow


def record(sql: str, *params: object) -> None:
    with psycopg.connect(os.environ["FLOWZ_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(sql, params)  # type: ignore[arg-type]


# Retried like any step that talks to a database: the fault tests terminate every connection
# of the database, this step's own included, and restart the server (about 5 s of retries).
@step(retries=8, retry_delay=0.1, backoff=1.5)
def effect(i: int, seconds: float) -> int:
    record("INSERT INTO fleet_effects (child, pid) VALUES (%s, %s)", i, os.getpid())
    time.sleep(seconds)
    return i


@workflow
async def record_fan(n: int, seconds: float) -> int:
    return sum(await gather_durable(*(effect(i, seconds) for i in range(n))))


@step
async def gated(i: int, gate: str) -> int:
    record("INSERT INTO fleet_gate_waits (child) VALUES (%s)", i)
    while not Path(gate).exists():
        await anyio.sleep(0.01)
    return i


@workflow
async def race_parent(k: int, width: int, gate: str) -> int:
    # Not durable on purpose: counts how many times this body starts.
    record("INSERT INTO fleet_resumes (parent, pid) VALUES (%s, %s)", k, os.getpid())
    return sum(await gather_durable(*(gated(i, gate) for i in range(width))))


@step
def slow_query(i: int, seconds: float) -> int:
    # A query that runs past several leases: the worker's heartbeats must keep the step.
    record("INSERT INTO fleet_effects (child, pid) VALUES (%s, %s)", i, os.getpid())
    with psycopg.connect(os.environ["FLOWZ_DATABASE_URL"]) as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return i


@workflow
async def slow_queries(n: int, seconds: float) -> int:
    inline = await slow_query(-1, seconds)
    return inline + sum(await gather_durable(*(slow_query(i, seconds) for i in range(n))))
