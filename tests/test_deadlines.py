"""Run deadlines: @workflow(timeout=) and options(deadline=), waiting included."""

from __future__ import annotations

import datetime as dt
import time

import anyio
import pytest

import flowz
from flowz import gather_durable, step, workflow

pytestmark = pytest.mark.anyio


@step
async def forever(i: int) -> int:
    await anyio.sleep(3600)
    return i


@workflow(timeout=0.5)
async def fan_that_never_ends(n: int) -> list[int]:
    return await gather_durable(*(forever(i) for i in range(n)))


@workflow(timeout=0.5)
async def nobody_answers() -> object:
    return await flowz.recv("answer")


@workflow(timeout=0.5)
async def busy() -> int:
    return await forever(1)  # an inline step running past the deadline


@workflow(timeout=60)
async def patient_child() -> object:
    return await flowz.recv("answer")


@workflow(timeout=0.8)
async def impatient_parent() -> object:
    return await patient_child()


@workflow
async def answered() -> object:
    return await flowz.recv("answer")


async def run_times_out(client: flowz.Client, wf: object, *args: object) -> float:
    started = time.monotonic()
    with anyio.fail_after(20), pytest.raises(flowz.RunTimeoutError, match="passed its deadline"):
        await client.run(wf, *args)  # type: ignore[arg-type]
    return time.monotonic() - started


async def test_a_deadline_fails_a_run_waiting_on_children_and_cancels_them(
    database_url: str,
) -> None:
    async with flowz.Client() as client:
        await run_times_out(client, fan_that_never_ends.options(id="fan", progress=False), 3)
        rows = await client.store.list_executions("fan")
        assert {r.id: r.status for r in rows} == {
            "fan": "failed",
            **{f"fan/0/{i}": "cancelled" for i in range(3)},
        }


async def test_a_deadline_fails_a_run_waiting_for_a_message(database_url: str) -> None:
    async with flowz.Client() as client:
        await run_times_out(client, nobody_answers.options(id="quiet", progress=False))
        with pytest.raises(flowz.RunEndedError):
            await client.send("quiet", "answer", "too late")


async def test_a_deadline_stops_a_run_that_is_running(database_url: str) -> None:
    async with flowz.Client() as client:
        assert await run_times_out(client, busy.options(progress=False)) < 10


async def test_a_childs_own_timeout_never_extends_its_parents_deadline(
    database_url: str,
) -> None:
    async with flowz.Client() as client:
        await run_times_out(client, impatient_parent.options(id="parent", progress=False))
        parent, child = await client.store.list_executions("parent")
        assert child.deadline is not None and parent.deadline is not None
        assert child.deadline <= parent.deadline
        assert child.status in ("failed", "cancelled")


async def test_a_deadline_given_when_starting(database_url: str) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)
    async with flowz.Client() as client:
        await run_times_out(client, answered.options(id="dl", deadline=soon, progress=False))
    with pytest.raises(flowz.UsageError, match="has no time zone"):
        answered.options(deadline=dt.datetime.now())
    with pytest.raises(flowz.UsageError, match="timeout=0"):
        workflow(timeout=0)
