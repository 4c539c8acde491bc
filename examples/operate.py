"""Operating runs: find the failed ones, read a journal, fork after a fix, prune.

Run it with `python examples/operate.py`. Three orders are shipped; one fails on
a bug in the `label` step. The script finds it with `list_runs`, reads its
journal, "deploys" the fix, forks the run at the labels (the reservation and
the charge are replayed from the journal, not done again), and prunes the
failed original. The same from a shell: `flowz list --status failed`,
`flowz journal RUN`, `flowz fork RUN --at 2`, `flowz db prune --older-than 0s
--status failed`.
"""

from __future__ import annotations

import datetime as dt
import uuid

import anyio

import flowz
from flowz import gather_durable, step, workflow

#: Stands for the bug the next release fixes: label() fails on a third item.
BUG = {"present": True}
#: Who was charged, to show that a fork does not charge twice.
CHARGED: list[str] = []


@step
async def reserve(order: str, items: int) -> list[str]:
    return [f"{order}/item-{i}" for i in range(items)]


@step
async def charge(order: str, items: int) -> str:
    CHARGED.append(order)
    return f"{order}: charged {items * 5} EUR"


@step
async def label(item: str) -> str:
    if BUG["present"] and item.endswith("item-2"):
        raise ValueError(f"no label printer for {item}")
    return f"label for {item}"


@workflow
async def ship(order: str, items: int) -> str:
    reserved = await reserve(order, items)  # position 0
    receipt = await charge(order, items)  # position 1
    labels = await gather_durable(*(label(i) for i in reserved))  # position 2
    return f"{receipt}, {len(labels)} labels"


async def main() -> None:
    batch = uuid.uuid4().hex[:6]  # new run ids each time the script runs
    async with flowz.Client() as client:
        for order, items in [("o-1", 2), ("o-2", 3), ("o-3", 1)]:
            run = ship.options(id=f"{order}-{batch}", progress=False)
            try:
                print(await client.run(run, order, items))
            except ValueError as exc:
                print(f"{order} failed: {exc}")

        # --8<-- [start:find]
        failed = await client.list_runs(status="failed", name=ship, since=dt.timedelta(hours=1))
        for info in failed:
            print(f"failed: {info.id} {info.error_type}: {info.error_message}")
        run_id = failed[0].id
        for entry in await client.journal(run_id):
            print(f"  {entry.position} {entry.kind} {entry.name} {entry.status}")
        # --8<-- [end:find]

        # --8<-- [start:fork]
        BUG["present"] = False  # the fix is deployed
        fixed = await client.fork(run_id, at=2)  # the labels run again, with the fixed code
        # Workers run the fork; here this process does, given the run's arguments.
        print("fork:", await client.run(ship.options(id=fixed.id, progress=False), "o-2", 3))
        print("charged:", ", ".join(CHARGED))  # o-2 once: the fork replayed the charge
        # --8<-- [end:fork]

        # --8<-- [start:prune]
        deleted = await client.prune(dt.timedelta(0), status="failed")
        print(f"pruned {deleted} failed run(s)")
        # --8<-- [end:prune]


if __name__ == "__main__":
    anyio.run(main)
