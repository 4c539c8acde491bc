"""Testing workflows with pytest: steps are plain functions; workflows run on a temp database.

Run it: `python -m pytest examples/test_pipeline.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import flowz
from flowz import gather_durable, step, workflow
from flowz.testing import temp_client


@step(retries=2)
async def price(item: str) -> int:
    return {"apple": 3, "pear": 4}[item]


@workflow
async def basket_total(items: list[str]) -> int:
    return sum(await gather_durable(*(price(i) for i in items)))


@workflow
async def reminder(items: list[str]) -> str:
    started = await flowz.now()
    await flowz.sleep(3 * 86400)  # three days, durably
    total = await basket_total(items)  # a child workflow
    waited = (await flowz.now()) - started
    return f"{total} after {waited.days} days"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client() -> AsyncIterator[flowz.Client]:
    # A fresh SQLite database per test, deleted afterwards; time skips while nothing runs.
    async with temp_client(skip_time=True) as client:
        yield client


def test_a_step_outside_a_workflow_is_the_plain_function() -> None:
    assert asyncio.run(price("pear")) == 4  # no database, no journal, no retries


@pytest.mark.anyio  # async tests through anyio's pytest plugin (installed with flowz)
async def test_the_workflow_end_to_end(client: flowz.Client) -> None:
    assert await client.run(basket_total, ["apple", "pear", "apple"]) == 10


@pytest.mark.anyio
async def test_a_failing_child_fails_the_run(client: flowz.Client) -> None:
    with pytest.raises(KeyError):
        await client.run(basket_total, ["apple", "kiwi"])


@pytest.mark.anyio
async def test_three_days_of_sleep_take_no_time(client: flowz.Client) -> None:
    assert await client.run(reminder, ["pear"]) == "4 after 3 days"
