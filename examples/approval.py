"""Waiting for a person: a payment waits for approval, with a timeout, then charges.

Run it with `python examples/approval.py`. It starts the run, reads the status the
workflow publishes, approves it the way a web handler or another process would
(`handle.send`, or `flowz send RUN approval --value '{"approved": true}'`), and
prints the result. While it waits, the run holds no worker.
"""

from __future__ import annotations

import uuid

import anyio

import flowz
from flowz import step, workflow


@step(retries=3)
async def charge(order: str, cents: int) -> str:
    return f"{order}: charged {cents / 100:.2f}"


@workflow
async def payment(order: str, cents: int) -> str:
    await flowz.set_event("status", "waiting for approval")
    decision = await flowz.recv("approval", timeout=24 * 3600)  # a day, durably
    if decision is None:
        await flowz.set_event("status", "expired")
        return f"{order}: nobody approved it within a day"
    if not decision["approved"]:
        await flowz.set_event("status", "declined")
        return f"{order}: declined by {decision['by']}"
    await flowz.set_event("status", "charging")
    return await charge(order, cents)


async def main() -> None:
    async with flowz.Client() as client, anyio.create_task_group() as tg:
        order = f"order-{uuid.uuid4().hex[:6]}"
        run = payment.options(id=order, progress=False)
        handle = await client.start(run, order, 1999)
        results: list[str] = []

        async def work() -> None:  # here a worker runs it; usually `flowz worker`
            results.append(await client.run(run, order, 1999))

        tg.start_soon(work)
        print("status:", await handle.get_event("status"))
        # The approval, from a web handler, another process or the command line:
        await handle.send("approval", {"approved": True, "by": "ada"})
    print(results[0])
    print("events:", await handle.events())


if __name__ == "__main__":
    anyio.run(main)
