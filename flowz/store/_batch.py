"""Group commit: concurrent callers' writes share one transaction (one fsync, one round trip)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

from .._types import JSON
from ._protocol import ExecutionRow, Fence, JournalEntry, NewExecution

__all__ = ["Append", "Finish", "GroupCommit", "NewRun", "Pending"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Finish:
    """An execution's end, as the stores' group commit of completions carries it."""

    fence: Fence
    status: str
    output: JSON
    error: JSON


@dataclass(frozen=True, slots=True)
class Append:
    """A journal entry, fenced by its execution's lease, as the group commit carries it."""

    fence: Fence
    entry: JournalEntry


@dataclass(slots=True)
class NewRun:
    """A run to create; the flush fills in its stored row and whether it was new."""

    run: NewExecution
    row: ExecutionRow | None = None
    created: bool = False


@dataclass(slots=True)
class Pending(Generic[T]):
    """One caller's write, waiting for the batch that commits it."""

    item: T
    done: anyio.Event = field(default_factory=anyio.Event)
    #: Set by the flush for this item alone (a lost lease), or for all (a database error).
    failure: BaseException | None = None


class GroupCommit(Generic[T]):
    """The first caller of a loop turn becomes the leader and commits everyone's items.

    The leader yields once so that writes arriving in the same event-loop turn (children
    finishing together) join its batch, then calls `flush(batch)` shielded from
    cancellation, since the batch holds other callers' writes.
    """

    def __init__(self, flush: Callable[[list[Pending[T]]], Awaitable[None]]) -> None:
        self._flush = flush
        self._queue: list[Pending[T]] = []

    async def submit(self, item: T) -> None:
        """Commit `item` with whatever else is waiting; raise its own failure, if any."""
        pending = Pending(item)
        self._queue.append(pending)
        if len(self._queue) == 1:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0)
                batch, self._queue = self._queue, []
                try:
                    await self._flush(batch)
                except Exception as exc:
                    for each in batch:
                        each.failure = each.failure or exc
                finally:
                    for each in batch:
                        each.done.set()
        else:
            await pending.done.wait()
        if pending.failure is not None:
            raise pending.failure
