"""Why a run waits: whether any live worker knows its function and takes its queue."""

from __future__ import annotations

import time

from ._registry import same_function
from .store._protocol import ExecutionRow, Store, WorkerRow

__all__ = ["live_workers", "why_waiting"]

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
    if not any(w.queue == row.queue for w in knowing):
        queues = ", ".join(sorted({repr(w.queue) for w in knowing}))
        return (
            f"no live worker that knows {row.name} takes queue {row.queue!r} (they take "
            f"{queues}): start one with --queue {row.queue}"
        )
    return None
