"""Calls mypy must accept, and wrong ones it must reject (each marked `# mypy: error`).

Checked by tests/test_client.py with `mypy --strict`; never run.
"""

from __future__ import annotations

import flowz
from flowz import step, workflow


@step
async def double(x: int) -> int:
    return 2 * x


@workflow
async def fan(n: int, label: str = "") -> int:
    return await double(n)


async def calls(client: flowz.Client) -> None:
    total: int = flowz.run(fan, 3)
    total = flowz.run(fan.options(id="x"), 3, label="ok")
    total = await fan.run(3)
    total = await fan.options(id="y", progress=False).run(n=3)
    handle: flowz.RunHandle[int] = await fan.start(3)
    total = await handle.result()
    total = await client.run(fan, 3)
    handle = await client.start(fan.options(id="z"), 3)
    flowz.run(fan, "x")  # mypy: error
    flowz.run(fan, 3, label=4)  # mypy: error
    await fan.run("3")  # mypy: error
    await fan.start(3, 4, 5)  # mypy: error
    await client.run(fan, [3])  # mypy: error
    await client.start(fan, n="3")  # mypy: error
    text: str = flowz.run(fan, 3)  # mypy: error
    print(total, text)
