"""Where durable calls find the running execution, and the journaled helpers.

A workflow body runs with an `ExecutionContext` in a ContextVar; a step body runs
with a `StepContext` instead (so steps called from a step are plain calls).
"""

from __future__ import annotations

import datetime as _dt
import random as _random
import uuid as _uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import anyio

from ._types import EntryKind
from .errors import UsageError

if TYPE_CHECKING:
    from ._decorators import DurableCall
    from ._gather import StepHandle

__all__ = [
    "ExecutionContext",
    "StepContext",
    "current_context",
    "current_step",
    "now",
    "random",
    "sleep",
    "step_context",
    "uuid4",
]


@final
@dataclass(frozen=True, slots=True)
class StepContext:
    """What a running step knows about itself; see `flowz.current_step()`."""

    #: The execution (workflow run or child) the step belongs to.
    execution_id: str
    #: The step's position in its workflow's journal (0 for a child step execution).
    position: int
    #: The journal name of the step.
    name: str
    #: 1 for the first attempt, 2 for the first retry, ...
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """A key that is the same for every attempt of this step: pass it to external APIs."""
        return f"{self.execution_id}#{self.position}"


class ExecutionContext(ABC):
    """The running attempt of a workflow execution, as durable calls see it."""

    @abstractmethod
    def now(self) -> float:
        """The database's clock, in epoch seconds (a drifting worker clock does not matter)."""

    @abstractmethod
    async def call_step(self, call: DurableCall[Any]) -> Any:
        """Run a step inline, durably (or replay it)."""

    @abstractmethod
    def schedule(self, calls: Sequence[DurableCall[Any]]) -> list[StepHandle[Any]]:
        """Reserve one position for these calls as children; inserted at the next durable call."""

    @abstractmethod
    async def wait(self, handles: Sequence[StepHandle[Any]], return_exceptions: bool) -> list[Any]:
        """Suspend until the children behind `handles` end; their results in handle order."""

    @abstractmethod
    async def record(self, name: str, kind: str, make: Any) -> Any:
        """Journal `make()` once at this position; return the journaled value on replay."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Suspend the workflow for `seconds`, durably."""


_context: ContextVar[ExecutionContext | StepContext | None] = ContextVar(
    "flowz_context", default=None
)


def current_context() -> ExecutionContext | None:
    """The workflow execution running in this task, or None (also inside a step body)."""
    ctx = _context.get()
    return ctx if isinstance(ctx, ExecutionContext) else None


def step_context() -> ContextVar[ExecutionContext | StepContext | None]:
    """The ContextVar itself, for the engine to set."""
    return _context


def current_step() -> StepContext:
    """The step running in this task.

    Example:
        >>> @step
        ... async def charge(amount: int) -> str:
        ...     key = flowz.current_step().idempotency_key
        ...     return await payments.charge(amount, idempotency_key=key)
    """
    ctx = _context.get()
    if not isinstance(ctx, StepContext):
        raise UsageError(
            "flowz.current_step() was called outside a step: call it from the body of a "
            "function decorated with @step while a workflow runs it"
        )
    return ctx


async def now() -> _dt.datetime:
    """The current UTC time, journaled: a replay returns the same value.

    Example:
        >>> started = await flowz.now()
    """
    ctx = current_context()
    if ctx is None:
        return _dt.datetime.now(_dt.UTC)
    value = _dt.datetime.fromtimestamp(ctx.now(), _dt.UTC)
    stored = await ctx.record("flowz.now", EntryKind.NOW, value.isoformat)
    return _dt.datetime.fromisoformat(stored)


async def uuid4() -> _uuid.UUID:
    """A random UUID, journaled: a replay returns the same value.

    Example:
        >>> order_id = await flowz.uuid4()
    """
    ctx = current_context()
    if ctx is None:
        return _uuid.uuid4()
    return _uuid.UUID(await ctx.record("flowz.uuid4", EntryKind.UUID, lambda: str(_uuid.uuid4())))


async def random() -> float:
    """A random float in [0, 1), journaled: a replay returns the same value.

    Example:
        >>> if await flowz.random() < 0.1: ...
    """
    ctx = current_context()
    if ctx is None:
        return _random.random()
    return float(await ctx.record("flowz.random", EntryKind.RANDOM, _random.random))


async def sleep(seconds: float) -> None:
    """Sleep durably: the workflow suspends and frees its worker.

    It resumes after `seconds`, even across restarts. Outside a workflow it is `anyio.sleep`.

    Example:
        >>> await flowz.sleep(3600)  # resumes in an hour, whatever happens meanwhile
    """
    if seconds < 0:
        raise UsageError(f"flowz.sleep() takes a non-negative number of seconds, got {seconds}")
    ctx = current_context()
    if ctx is None:
        await anyio.sleep(seconds)
    else:
        await ctx.sleep(seconds)
