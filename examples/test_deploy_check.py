"""Changing a workflow while runs are in flight: `flowz.patched` and the replay check.

Run it with `pytest examples/test_deploy_check.py`. Yesterday's release sent an
email; today's sends a receipt instead. Runs started yesterday and still waiting
must finish as they began, so today's code guards the change with
`flowz.patched`. The replay check (`flowz.testing.replay`, or `flowz replay`
in CI against a copy of production) proves it before the deploy, and shows
that the unguarded change would have broken the runs in flight.

The two releases live in one file here, each in a registry of its own under
the same journal names; in a project they are two commits of one module.
"""

from __future__ import annotations

import anyio
import pytest

import flowz
from flowz import Registry, step, workflow
from flowz.testing import replay, temp_client

pytestmark = pytest.mark.anyio

YESTERDAY, TODAY, UNGUARDED = Registry(), Registry(), Registry()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# Yesterday's release.
@step(name="shop:email", registry=YESTERDAY)
async def email(order: str) -> str:
    return f"emailed {order}"


@workflow(name="shop:notify", registry=YESTERDAY)
async def notify_v1(order: str) -> str:
    sent = await email(order)
    await flowz.recv("delivered")  # runs wait here for days
    return sent


# --8<-- [start:patched]
# Today's release: a receipt instead of the email, for new runs only.
@step(name="shop:receipt", registry=TODAY)
async def receipt(order: str) -> str:
    return f"receipt for {order}"


@step(name="shop:email", registry=TODAY)
async def email_today(order: str) -> str:
    return f"emailed {order}"


@workflow(name="shop:notify", registry=TODAY)
async def notify_v2(order: str) -> str:
    if flowz.patched("receipt-instead-of-email"):
        sent = await receipt(order)
    else:
        sent = await email_today(order)  # what runs recorded by yesterday's release did
    await flowz.recv("delivered")
    return sent


# --8<-- [end:patched]


# The same change without the guard.
@step(name="shop:receipt", registry=UNGUARDED)
async def receipt_unguarded(order: str) -> str:
    return f"receipt for {order}"


@workflow(name="shop:notify", registry=UNGUARDED)
async def notify_unguarded(order: str) -> str:
    sent = await receipt_unguarded(order)
    await flowz.recv("delivered")
    return sent


async def record_yesterdays_run(client: flowz.Client) -> None:
    """Yesterday's code runs order-1 up to its wait for "delivered", then is stopped."""
    run = notify_v1.options(id="order-1", progress=False)
    await client.start(run, "order-1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: client.run(run, "order-1"))
        while True:
            mark = client.store.change_mark()
            if any(e.status == "waiting" for e in await client.journal("order-1")):
                break
            await client.store.wait_for_change(1.0, mark)  # woken by the run's next write
        tg.cancel_scope.cancel()  # the deploy stops the workers


async def test_todays_code_replays_the_runs_in_flight() -> None:
    async with temp_client() as client:
        await record_yesterdays_run(client)
        # --8<-- [start:check]
        report = await replay(client, registry=TODAY)  # default: the decorators' registry
        assert report.ok, report.describe()
        # --8<-- [end:check]


async def test_the_unguarded_change_would_break_them() -> None:
    async with temp_client() as client:
        await record_yesterdays_run(client)
        report = await replay(client, registry=UNGUARDED)
        assert not report.ok
        assert "now calls 'step shop:receipt', but its journal recorded 'step shop:email'" in (
            report.describe()
        )


async def test_old_runs_keep_the_email_and_new_runs_get_a_receipt() -> None:
    async with temp_client() as client:
        await record_yesterdays_run(client)
        await client.send("order-1", "delivered", True)
        old = await client.run(notify_v2.options(id="order-1", progress=False), "order-1")
        assert old == "emailed order-1"
        new = await client.start(notify_v2.options(id="order-2", progress=False), "order-2")
        await new.send("delivered", True)
        assert await client.run(notify_v2.options(id="order-2", progress=False), "order-2") == (
            "receipt for order-2"
        )
