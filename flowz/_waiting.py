"""Why work waits: no live worker knows its function or takes its queue, or a queue's limit."""

from __future__ import annotations

import time

from ._registry import same_function
from .store._protocol import ExecutionRow, QueueRow, Store, WorkerRow

__all__ = ["live_workers", "queue_state", "why_waiting"]

_SHOWN_NAMES = 8


async def live_workers(store: Store, lease_seconds: float) -> list[WorkerRow]:
    """Workers whose heartbeat (every third of a lease) came within the last lease."""
    now = time.time()
    return [w for w in await store.list_workers() if now - w.heartbeat_at <= lease_seconds]


async def why_waiting(store: Store, row: ExecutionRow, lease_seconds: float) -> str | None:
    """What keeps a queued execution from starting, or None if a live worker could take it."""
    live = await live_workers(store, lease_seconds)
    if not live:
        return (
            f"no worker is running on this database: start one that imports the module "
            f"of {row.name} (`flowz worker MODULE`)"
        )
    knowing = [w for w in live if any(same_function(row.name, n) for n in w.names)]
    if not knowing:
        known = sorted({n for w in live for n in w.names})
        shown = ", ".join(known[:_SHOWN_NAMES]) or "nothing"
        if len(known) > _SHOWN_NAMES:
            shown += f" (+{len(known) - _SHOWN_NAMES} more)"
        return (
            f"no live worker knows {row.name}; live workers know: {shown}. Start a worker "
            "that imports its module"
        )
    if not any(row.queue in w.queue.split(",") for w in knowing):
        queues = ", ".join(sorted({repr(q) for w in knowing for q in w.queue.split(",")}))
        return (
            f"no live worker that knows {row.name} takes queue {row.queue!r} (they take "
            f"{queues}): start one with --queue {row.queue}"
        )
    for queue in await store.list_queues():
        if queue.limits.name == row.queue:
            return queue_state(queue, live)
    return None


def queue_state(queue: QueueRow, live: list[WorkerRow]) -> str | None:
    """Why a queue's due work waits (its limit, or no worker), or None if nothing holds it."""
    limits = queue.limits
    if queue.waiting == 0:
        return None
    if limits.concurrency is not None and queue.running >= limits.concurrency:
        return (
            f"queue {limits.name!r} is at its limit: {queue.running}/{limits.concurrency} running"
        )
    if limits.rate_limit is not None and queue.recent_starts >= limits.rate_limit:
        return (
            f"queue {limits.name!r} is at its rate: {queue.recent_starts} started in the last "
            f"{limits.rate_period:g} s (limit {limits.rate_limit})"
        )
    if not any(limits.name in w.queue.split(",") for w in live):
        return f"no live worker takes queue {limits.name!r}: start one that imports its functions"
    return None
