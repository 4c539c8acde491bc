"""Quickstart: a 1,000-wide durable fan-out on embedded SQLite.

Run it with `python examples/quickstart.py`; run it again with the same
FLOWZ_RUN_ID to get the stored result back without running anything again.
"""

import os

import flowz
from flowz import gather_durable, step, workflow


@step(retries=2, backoff=2.0, timeout=10)
async def double(x: int) -> int:
    return 2 * x


@step
async def total(values: list[int]) -> int:
    return sum(values)


@workflow
async def fan(n: int) -> int:
    values = await gather_durable(*(double(i) for i in range(n)))
    return await total(values)


if __name__ == "__main__":
    print(flowz.run(fan.options(id=os.environ.get("FLOWZ_RUN_ID")), 1000))
