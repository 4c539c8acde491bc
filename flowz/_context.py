"""The call protocol: durable calls, child handles, and where they find the running execution.

A workflow body runs with an `ExecutionContext` in a ContextVar; a step body runs
with a `StepContext` instead (so steps called from a step are plain calls). The
call protocol sits here, below the engine, because a `DurableCall` finds the
engine through that ContextVar; the decorated functions' `.run/.start` sit above
the runtime, in `_decorators`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import random as _random
import uuid as _uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, cast, final

import anyio

from ._registry import Definition, Registry
from ._types import JSON, EntryKind, Kind
from .errors import NotAWorkflowError, UsageError

__all__ = [
    "DurableCall",
    "DurableFunction",
    "ExecutionContext",
    "RunOptions",
    "StepHandle",
    "StepContext",
    "check_run_arguments",
    "check_workflow",
    "current_context",
    "current_step",
    "deprecate_patch",
    "now",
    "patched",
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
    async def cancel_child(self, handle: StepHandle[Any]) -> None:
        """Cancel the child behind `handle` and its descendants, journaled."""

    @abstractmethod
    async def wait_first(
        self, handles: Sequence[StepHandle[Any]], return_exceptions: bool
    ) -> tuple[int, Any]:
        """Suspend until one of the children behind `handles` ends; its index and result."""

    async def wait_one(self, handle: StepHandle[T]) -> T:
        """Suspend until the child behind `handle` ends; its result (or its error raised)."""
        results = await self.wait([handle], return_exceptions=False)
        return cast(T, results[0])

    @abstractmethod
    async def record(self, name: str, kind: str, make: Any) -> Any:
        """Journal `make()` once at this position; return the journaled value on replay."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Suspend the workflow for `seconds`, durably."""

    @abstractmethod
    def patched(self, patch_id: str, deprecated: bool) -> bool:
        """Whether this run takes the code guarded by the patch (see `flowz.patched`)."""

    @abstractmethod
    async def recv(self, topic: str, timeout: float | None) -> JSON:
        """The next message on `topic` for this execution; None after `timeout` seconds."""

    @abstractmethod
    async def set_event(self, name: str, value: JSON) -> None:
        """Publish the latest value of the execution's event `name`, journaled."""

    @abstractmethod
    async def write_stream(self, name: str, value: JSON, closed: bool) -> None:
        """Append a value to the execution's stream `name` (or close it), journaled."""

    @abstractmethod
    async def send(self, run_id: str, topic: str, value: JSON, idempotency_key: str | None) -> None:
        """Send a message to a workflow execution, journaled: a replay does not send again."""


P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


@final
class DurableCall(Generic[R]):
    """A call of a step or workflow made inside a workflow, not yet awaited.

    Awaited, it runs durably; passed un-awaited to `gather_durable` or
    `flowz.schedule`, it runs as a child execution.
    """

    __slots__ = ("args", "definition", "kwargs")

    def __init__(self, definition: Definition, args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.definition = definition
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"<flowz call {self.definition.name}>"

    def __await__(self) -> Generator[Any, None, R]:
        ctx = current_context()
        if ctx is None:
            raise UsageError(
                f"{self!r} was awaited outside a running workflow: start a workflow with "
                "`await wf.run(...)`, `wf.start(...)` or `flowz.run(wf, ...)`"
            )
        if self.definition.kind is Kind.STEP and self.definition.options.queue is None:
            # The position is taken here, synchronously, in program order (see ExecutionContext).
            return ctx.call_step(self).__await__()
        # A child workflow, or a step of a queue (a child, so the queue's limits hold for it).
        return ctx.wait_one(ctx.schedule([self])[0]).__await__()


@final
class StepHandle(Generic[T]):
    """A child execution scheduled by `flowz.schedule`; await it, or pass it to `wait_all`."""

    __slots__ = ("definition", "index", "position")

    def __init__(self, definition: Definition, position: int, index: int) -> None:
        self.definition = definition
        self.position = position
        self.index = index

    def __repr__(self) -> str:
        return f"<StepHandle {self.definition.name} at {self.position}.{self.index}>"

    async def cancel(self) -> None:
        """Cancel this child (and what it started) unless it has ended; journaled.

        A pending child never starts; a running one is stopped within about a second.
        Awaiting it afterwards raises RunCancelledError.

        Examples:
            >>> index, page = await flowz.wait_first([mirror_a, mirror_b])
            >>> await (mirror_b if index == 0 else mirror_a).cancel()
        """
        ctx = current_context()
        if ctx is None:
            raise UsageError(f"{self!r}.cancel() was called outside the workflow that scheduled it")
        await ctx.cancel_child(self)

    def __await__(self) -> Generator[Any, None, T]:
        ctx = current_context()
        if ctx is None:
            raise UsageError(
                f"{self!r} was awaited outside the workflow that scheduled it: await it in "
                "the workflow's body"
            )
        return ctx.wait_one(self).__await__()


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a workflow run is started: set with `wf.options(...)`."""

    #: The run id; the same id never starts a second run (default: a new time-ordered UUID).
    id: str | None = None
    #: True, False or a `flowz.progress.ProgressView` (default: the settings' `progress`);
    #: typed loosely here, below the views: `WorkflowFunction.options` types it.
    progress: object = None
    #: When the run fails with RunTimeoutError (an aware datetime), if before its timeout.
    deadline: _dt.datetime | None = None
    #: Higher runs first within a queue; its children inherit it.
    priority: int = 0
    #: The key its queue's per_partition limit counts by; its children inherit it.
    partition: str | None = None


_RESERVED = ("id", "progress")


class DurableFunction(Generic[P, R]):
    """What @step and @workflow return: the function, its journal name and its registry."""

    def __init__(self, definition: Definition, registry: Registry) -> None:
        self.definition = definition
        self.registry = registry
        self.run_options = RunOptions()
        functools.update_wrapper(cast(Callable[..., Any], self), definition.fn)

    @property
    def name(self) -> str:
        """The journal name: `module:qualname` unless given with name=."""
        return self.definition.name

    @property
    def fn(self) -> Callable[..., Any]:
        """The undecorated function."""
        return self.definition.fn

    def _replace_options(self, **changes: Any) -> Any:
        """A copy of this function whose run options have `changes`."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.run_options = dataclasses.replace(self.run_options, **changes)
        return copy


def check_workflow(wf: object) -> DurableFunction[Any, Any]:
    """`wf` if it is a decorated workflow; else NotAWorkflowError, before anything is opened."""
    if not isinstance(wf, DurableFunction) or wf.definition.kind is not Kind.WORKFLOW:
        raise NotAWorkflowError(
            f"{wf!r} is not a workflow: decorate the async function with @flowz.workflow"
        )
    return wf


def check_run_arguments(fn: DurableFunction[Any, Any], kwargs: dict[str, Any]) -> None:
    """Refuse the old `wf.run(..., id=...)` spelling with the new one."""
    misplaced = [name for name in _RESERVED if name in kwargs]
    if misplaced:
        name = misplaced[0]
        raise UsageError(
            f"{name}= is an option of the run, not an argument of {fn.name}: write "
            f"`{fn.fn.__name__}.options({name}=...).run(...)` (or .start(...), or pass "
            f"`{fn.fn.__name__}.options({name}=...)` to flowz.run)"
        )


def reserved_parameters() -> tuple[str, ...]:
    """Parameter names a workflow may not use: they are run options."""
    return _RESERVED


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

    Examples:
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

    Examples:
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

    Examples:
        >>> order_id = await flowz.uuid4()
    """
    ctx = current_context()
    if ctx is None:
        return _uuid.uuid4()
    return _uuid.UUID(await ctx.record("flowz.uuid4", EntryKind.UUID, lambda: str(_uuid.uuid4())))


async def random() -> float:
    """A random float in [0, 1), journaled: a replay returns the same value.

    Examples:
        >>> if await flowz.random() < 0.1: ...
    """
    ctx = current_context()
    if ctx is None:
        return _random.random()
    return float(await ctx.record("flowz.random", EntryKind.RANDOM, _random.random))


def patched(patch_id: str) -> bool:
    """True where a workflow takes its new code, False where a run recorded the old.

    Guard a change to a workflow's durable calls with it, and runs recorded before
    the change replay the old branch while new runs (and old runs past the point
    they had reached) take the new one. The choice is journaled, so it stays the
    same for the run. Outside a workflow it is True.

    Once no run recorded before the change is left (see `flowz list --until`),
    remove the old branch and write `flowz.deprecate_patch(patch_id)` where the
    `if` was; later, remove that too.

    Examples:
        >>> if flowz.patched("send-receipt"):
        ...     await send_receipt(order)
        ... else:
        ...     await send_email(order)  # what runs before this release did
    """
    _check_patch_id(patch_id)
    ctx = current_context()
    return True if ctx is None else ctx.patched(patch_id, deprecated=False)


def deprecate_patch(patch_id: str) -> None:
    """Mark where a removed `flowz.patched(patch_id)` was, once only the new branch is left.

    Runs that journaled the patch take its marker here and replay on; new runs
    record nothing.

    Examples:
        >>> flowz.deprecate_patch("send-receipt")
        >>> await send_receipt(order)
    """
    _check_patch_id(patch_id)
    ctx = current_context()
    if ctx is not None:
        ctx.patched(patch_id, deprecated=True)


def _check_patch_id(patch_id: object) -> None:
    if not isinstance(patch_id, str) or not patch_id:
        raise UsageError(
            f"patch id {patch_id!r}: name the change with a non-empty string, e.g. "
            'flowz.patched("send-receipt")'
        )


async def sleep(seconds: float) -> None:
    """Sleep durably: the workflow suspends and frees its worker.

    It resumes after `seconds`, even across restarts. Outside a workflow it is `anyio.sleep`.

    Examples:
        >>> await flowz.sleep(3600)  # resumes in an hour, whatever happens meanwhile
    """
    if seconds < 0:
        raise UsageError(f"flowz.sleep() takes a non-negative number of seconds, got {seconds}")
    ctx = current_context()
    if ctx is None:
        await anyio.sleep(seconds)
    else:
        await ctx.sleep(seconds)
