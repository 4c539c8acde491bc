"""Runs ONE attempt of one execution: replay the journal, run the body, record or suspend.

Pure logic over the `Store` protocol: no SQL, no worker loop, no UI.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from . import _tracing as tracing
from ._context import DurableCall, ExecutionContext, StepContext, StepHandle, step_context
from ._events import (
    ChildFinished,
    ChildrenScheduled,
    EventBus,
    EventSet,
    RunFinished,
    RunResumed,
    RunStarted,
    RunSuspended,
    StepFinished,
    StepRetried,
    StepStarted,
)
from ._logging import in_step
from ._registry import Definition, StepOptions, same_function
from ._serde import dump_error, load_error
from ._types import JSON, EntryKind, Kind, Status, json_number, json_object
from .errors import (
    NonDeterminismError,
    RunCancelledError,
    RunNotFoundError,
    RunTimeoutError,
    StepTimeoutError,
    StoreError,
    UnknownWorkflowError,
    UsageError,
)
from .store._protocol import (
    ChildOutcome,
    Claim,
    ExecutionRow,
    JournalEntry,
    NewExecution,
    Store,
)

__all__ = [
    "INLINE_RETRY_LIMIT",
    "check_replayed",
    "check_width",
    "children_results",
    "execute",
    "patch_decision",
    "retry_delay",
]

P = ParamSpec("P")
T = TypeVar("T")

#: A retry delay up to this many seconds is slept in place; a longer one suspends the workflow.
INLINE_RETRY_LIMIT = 1.0


class _Suspend(BaseException):
    """The workflow suspended; its state is already stored.

    A BaseException, so that a workflow's `except Exception` cannot swallow it.
    """


class _StoreFailed(BaseException):
    """A durable call could not reach the store: the attempt ends, the worker gives it back.

    A BaseException, so that a workflow's `except Exception` cannot swallow it and go on
    without its journal; the database failing is not the workflow failing.
    """

    def __init__(self, error: StoreError) -> None:
        super().__init__(error)
        self.error = error


def _escapes_the_body(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn a StoreError from this durable-call method into _StoreFailed."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except RunNotFoundError:
            raise  # a message to a run that is not there: the workflow's to handle
        except StoreError as exc:
            raise _StoreFailed(exc) from exc

    return wrapper


def check_replayed(
    journal: dict[int, JournalEntry], run_id: str, position: int, name: str, kind: str
) -> JournalEntry | None:
    """The journal's entry at `position`, if any; NonDeterminismError if it records another call."""
    entry = journal.get(position)
    if entry is not None and (not same_function(entry.name, name) or entry.kind != kind):
        raise NonDeterminismError(run_id, position, f"{kind} {name}", f"{entry.kind} {entry.name}")
    return entry


def check_width(entry: JournalEntry, run_id: str, width: int) -> None:
    """NonDeterminismError if a replayed gather now has another number of calls."""
    recorded = json_object(entry.output)["width"]
    if recorded != width:
        raise NonDeterminismError(
            run_id,
            entry.position,
            f"{entry.kind} {entry.name} x{width}",
            f"{entry.kind} {entry.name} x{recorded}",
        )


def patch_decision(
    journal: dict[int, JournalEntry], position: int, patch_id: str, deprecated: bool
) -> str:
    """What `flowz.patched(patch_id)` does at `position`, given the recorded journal.

    "marker": the journal holds this patch's marker there: take the position, True.
    "new": the run never reached this position: the new code runs; journal a marker.
    "old": the run went past here before the patch existed: take nothing, False.
    "skip": a deprecated patch without its marker: take nothing, journal nothing.
    """
    entry = journal.get(position)
    if entry is not None and entry.kind == EntryKind.PATCH and entry.name == patch_id:
        return "marker"
    if deprecated:
        return "skip"
    if entry is None and position > max(journal, default=-1):
        return "new"
    return "old"


def retry_delay(options: StepOptions, attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based), with ±20 % jitter."""
    return options.retry_delay * options.backoff ** (attempt - 1) * random.uniform(0.8, 1.2)


def _retryable(options: StepOptions, exc: BaseException, attempt: int) -> bool:
    # A misuse (say, a result that cannot be stored) fails the same way every time.
    return (
        attempt < options.max_attempts
        and isinstance(exc, options.retry_on)
        and not isinstance(exc, UsageError)
    )


async def _invoke(
    definition: Definition, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: StepContext
) -> Any:
    """Call the step body once, with its StepContext and timeout."""
    var = step_context()
    token = var.set(ctx)
    timeout = definition.options.timeout
    try:
        with anyio.move_on_after(timeout):
            if definition.is_async:
                return await definition.fn(*args, **kwargs)
            return await anyio.to_thread.run_sync(
                functools.partial(definition.fn, *args, **kwargs), abandon_on_cancel=True
            )
    finally:
        var.reset(token)
    raise StepTimeoutError(
        f"step {definition.name} (attempt {ctx.attempt}) ran longer than its timeout of "
        f"{timeout} s: raise timeout= or make the step faster"
    )


class _Attempt(ExecutionContext):
    """One attempt of a workflow execution."""

    def __init__(
        self, store: Store, claim: Claim, journal: dict[int, JournalEntry], bus: EventBus
    ) -> None:
        self.store = store
        self.bus = bus
        self.row = claim.execution
        self.fence = claim.fence
        self._claim = claim
        self.journal = journal
        self.position = 0
        self.nondeterminism: NonDeterminismError | None = None
        self._entries: list[JournalEntry] = []
        self._children: list[NewExecution] = []

    # -- journal helpers --------------------------------------------------
    def _next(self) -> int:
        position = self.position
        self.position += 1
        return position

    def _replayed(self, position: int, name: str, kind: str) -> JournalEntry | None:
        try:
            return check_replayed(self.journal, self.row.id, position, name, kind)
        except NonDeterminismError as error:
            # Kept: the body may swallow it, and the run must fail all the same.
            self.nondeterminism = self.nondeterminism or error
            raise

    @_escapes_the_body
    async def flush(self) -> None:
        """Store scheduled children (and their journal entries) in one transaction."""
        if self._entries:
            entries, children = self._entries, self._children
            self._entries, self._children = [], []
            await self.store.schedule_children(self.fence, entries, children)

    @_escapes_the_body
    async def _suspend_until(self, run_at: float, entry: JournalEntry | None, reason: str) -> None:
        await self.flush()
        await self.store.suspend_until(self.fence, run_at, entry)
        local_now = time.time()  # observers draw with this process's clock
        self.bus.publish(
            RunSuspended(self.row.id, reason, local_now + run_at - self.now(), local_now)
        )
        raise _Suspend

    @_escapes_the_body
    async def _append(self, entry: JournalEntry) -> None:
        await self.store.append_journal(self.fence, entry)

    # -- ExecutionContext ---------------------------------------------------
    def now(self) -> float:
        return self._claim.now()

    async def call_step(self, call: DurableCall[Any]) -> Any:
        position = self._next()
        definition = call.definition
        entry = self._replayed(position, definition.name, EntryKind.STEP)
        codec = definition.codec
        attempt = 1
        if entry is not None:
            if entry.status in ("succeeded", "failed"):
                self.bus.publish(
                    StepFinished(
                        self.row.id, position, definition.name, entry.attempt,
                        entry.status == "succeeded", time.time(), replayed=True,
                    )
                )  # fmt: skip
                if entry.status == "succeeded":
                    return codec.load_result(entry.output)
                raise load_error(entry.error)
            attempt = entry.attempt + 1  # a retry that suspended the workflow
            retry_at = json_number(json_object(entry.output)["retry_at"])
            if retry_at > self.now():
                await self._suspend_until(retry_at, None, "retry")
        codec.dump_args(call.args, call.kwargs)  # a bad argument fails here, at the call site
        await self.flush()
        options = definition.options
        started = self.now()

        def journaled(status: str, **fields: Any) -> JournalEntry:
            return JournalEntry(
                position, EntryKind.STEP, definition.name, status,
                attempt=attempt, started_at=started, **fields,
            )  # fmt: skip

        while True:
            ctx = StepContext(self.row.id, position, definition.name, attempt)
            self.bus.publish(
                StepStarted(self.row.id, position, definition.name, attempt, time.time())
            )
            try:
                with (
                    in_step(definition.name),
                    tracing.step_span(self.row, definition.name, position, attempt),
                ):
                    result = await _invoke(definition, call.args, call.kwargs, ctx)
                output = codec.dump_result(result)
            except Exception as exc:
                if not _retryable(options, exc, attempt):
                    self.bus.publish(
                        StepFinished(
                            self.row.id, position, definition.name, attempt, False, time.time()
                        )
                    )
                    await self._append(
                        journaled("failed", error=dump_error(exc), finished_at=self.now())
                    )
                    raise
                delay = retry_delay(options, attempt)
                self.bus.publish(
                    StepRetried(
                        self.row.id, position, definition.name, attempt, repr(exc), time.time()
                    )
                )
                if delay > INLINE_RETRY_LIMIT:
                    retry_at = self.now() + delay
                    retrying = journaled(
                        "retrying", output={"retry_at": retry_at}, error=dump_error(exc)
                    )
                    await self._suspend_until(retry_at, retrying, "retry")
                await anyio.sleep(delay)
                attempt += 1
                continue
            await self._append(journaled("succeeded", output=output, finished_at=self.now()))
            self.bus.publish(
                StepFinished(self.row.id, position, definition.name, attempt, True, time.time())
            )
            # Return what a replay would return, so first run and replay see the same value.
            return codec.load_result(output)

    def schedule(self, calls: Sequence[DurableCall[Any]]) -> list[StepHandle[Any]]:
        if not calls:
            return []
        position = self._next()
        names = sorted({c.definition.name for c in calls})
        name = names[0] if len(names) == 1 else ",".join(names)
        kind = EntryKind.SCHEDULE if len(calls) == 1 else EntryKind.GATHER
        entry = self._replayed(position, name, kind)
        handles = [StepHandle[Any](c.definition, position, i) for i, c in enumerate(calls)]
        self.bus.publish(
            ChildrenScheduled(
                self.row.id, position, name, len(calls), time.time(), replayed=entry is not None
            )
        )
        if entry is not None:
            try:
                check_width(entry, self.row.id, len(calls))
            except NonDeterminismError as error:
                self.nondeterminism = self.nondeterminism or error
                raise
            return handles
        # Serialise every argument now, so a bad one fails at the call site.
        inputs = [c.definition.codec.dump_args(c.args, c.kwargs) for c in calls]
        partitions = [self._partition(c) for c in calls]
        trace_context = tracing.gather_context(self.row, name, position, len(calls))
        self._entries.append(
            JournalEntry(
                position,
                kind,
                name,
                "scheduled",
                output={"width": len(calls)},
                started_at=self.now(),
            )
        )
        self._children.extend(
            NewExecution(
                id=f"{self.row.id}/{position}/{i}",
                root_id=self.row.root_id,
                parent_id=self.row.id,
                position=position,
                child_index=i,
                kind=c.definition.kind.value,
                name=c.definition.name,
                input=inputs[i],
                max_attempts=c.definition.options.max_attempts,
                queue=_queue_of(c.definition, self.row.queue),
                priority=self.row.priority,
                deadline=self._child_deadline(c.definition),
                partition_key=partitions[i],
                trace_context=trace_context,
            )
            for i, c in enumerate(calls)
        )
        return handles

    def _partition(self, call: DurableCall[Any]) -> str | None:
        """A child's partition key: its step's function of the arguments, else this run's."""
        key_of = call.definition.options.partition
        if key_of is None:
            return self.row.partition_key
        try:
            key = key_of(*call.args, **call.kwargs)
        except Exception as exc:
            raise UsageError(
                f"the partition function of {call.definition.name} raised {exc!r} for "
                f"{call!r}: it must return a string for every call"
            ) from exc
        if not isinstance(key, str):
            raise UsageError(
                f"the partition function of {call.definition.name} returned {key!r}: "
                "return a string (a tenant, a user, a host)"
            )
        return key

    def _child_deadline(self, definition: Definition) -> float | None:
        """A workflow child's deadline: its own timeout, never past this run's deadline."""
        if definition.kind is not Kind.WORKFLOW:
            return None  # a step child ends with its parent: the parent-close policy
        timeout = definition.options.timeout
        own = None if timeout is None else self.now() + timeout
        deadlines = [d for d in (own, self.row.deadline) if d is not None]
        return min(deadlines, default=None)

    @_escapes_the_body
    async def wait(self, handles: Sequence[StepHandle[Any]], return_exceptions: bool) -> list[Any]:
        wait_position = self._next()
        if not handles:
            return []
        positions = sorted({h.position for h in handles})
        unsaved = {e.position for e in self._entries}
        if not unsaved.issuperset(positions):
            # Some children exist already (a replay, or scheduled earlier): look before suspending.
            results = await self._results(handles, return_exceptions)
            if results is not None:
                return results
        entries, children = self._entries, self._children
        self._entries, self._children = [], []
        while not await self.store.wait_for_children(
            self.fence, wait_position, positions, entries, children
        ):
            entries, children = [], []
            results = await self._results(handles, return_exceptions)
            if results is not None:
                return results
        self.bus.publish(RunSuspended(self.row.id, "children", None, time.time()))
        raise _Suspend

    @_escapes_the_body
    async def wait_first(
        self, handles: Sequence[StepHandle[Any]], return_exceptions: bool
    ) -> tuple[int, Any]:
        wait_position = self._next()
        entry = self._replayed(wait_position, "flowz.wait_first", EntryKind.FIRST)
        if entry is None:
            positions = sorted({h.position for h in handles})
            entries, children = self._entries, self._children
            self._entries, self._children = [], []
            while True:
                chosen = None if entries else await self._first_ended(handles)
                if chosen is not None:
                    break
                if await self.store.wait_for_children(
                    self.fence, wait_position, positions, entries, children, first=True
                ):
                    self.bus.publish(RunSuspended(self.row.id, "children", None, time.time()))
                    raise _Suspend
                entries, children = [], []
            now = self.now()
            # The choice is journaled: a replay takes the same child, whatever ended since.
            choice = JournalEntry(
                wait_position, EntryKind.FIRST, "flowz.wait_first", "succeeded",
                output={"index": chosen}, started_at=now, finished_at=now,
            )  # fmt: skip
            await self._append(choice)
        else:
            chosen = int(json_number(json_object(entry.output)["index"]))
        results = await self._results([handles[chosen]], return_exceptions)
        assert results is not None  # the chosen child has ended
        return chosen, results[0]

    @_escapes_the_body
    async def cancel_child(self, handle: StepHandle[Any]) -> None:
        position = self._next()
        if self._replayed(position, handle.definition.name, EntryKind.CANCEL) is not None:
            return
        await self.flush()  # the child may not be stored yet
        now = self.now()
        entry = JournalEntry(
            position, EntryKind.CANCEL, handle.definition.name, "succeeded",
            output={"position": handle.position, "index": handle.index},
            started_at=now, finished_at=now,
        )  # fmt: skip
        child_id = f"{self.row.id}/{handle.position}/{handle.index}"
        await self.store.cancel_child(self.fence, entry, child_id)

    async def _first_ended(self, handles: Sequence[StepHandle[Any]]) -> int | None:
        """The index of the handle whose child ended first (then the lowest index), or None."""
        index_of = {(h.position, h.index): i for i, h in enumerate(handles)}
        ended = [
            (row.finished_at or 0.0, index_of[key])
            async for row in _outcomes(self.store, self.row.id, handles)
            if (key := (row.position, row.child_index)) in index_of
            and Status(row.status).is_terminal
        ]
        return min(ended)[1] if ended else None

    async def _results(
        self, handles: Sequence[StepHandle[Any]], return_exceptions: bool
    ) -> list[Any] | None:
        return await children_results(self.store, self.row.id, handles, return_exceptions)

    @_escapes_the_body
    async def record(self, name: str, kind: str, make: Callable[[], Any]) -> Any:
        position = self._next()
        entry = self._replayed(position, name, kind)
        if entry is not None:
            return entry.output
        await self.flush()
        value = make()
        now = self.now()
        await self.store.append_journal(
            self.fence,
            JournalEntry(
                position, kind, name, "succeeded", output=value, started_at=now, finished_at=now
            ),
        )
        return value

    @_escapes_the_body
    async def recv(self, topic: str, timeout: float | None) -> JSON:
        position = self._next()
        entry = self._replayed(position, topic, EntryKind.RECV)
        if entry is not None and entry.status == "succeeded":
            return entry.output
        if entry is not None:  # woken from a wait: by a message, or by its deadline
            recorded = json_object(entry.output).get("deadline")
            deadline = None if recorded is None else json_number(recorded)
        else:
            deadline = None if timeout is None else self.now() + timeout
        await self.flush()
        taken, value = await self.store.receive(self.fence, position, topic, deadline)
        if taken:
            return value
        local_now = time.time()  # observers draw with this process's clock
        until = None if deadline is None else local_now + deadline - self.now()
        self.bus.publish(RunSuspended(self.row.id, "message", until, local_now, topic=topic))
        raise _Suspend

    @_escapes_the_body
    async def set_event(self, name: str, value: JSON) -> None:
        position = self._next()
        if self._replayed(position, name, EntryKind.EVENT) is not None:
            return
        await self.flush()
        now = self.now()
        entry = JournalEntry(
            position, EntryKind.EVENT, name, "succeeded", output=value, started_at=now,
            finished_at=now,
        )  # fmt: skip
        await self.store.set_event(self.fence, entry, name, value)
        self.bus.publish(EventSet(self.row.id, name, value, time.time()))

    @_escapes_the_body
    async def write_stream(self, name: str, value: JSON, closed: bool) -> None:
        position = self._next()
        if self._replayed(position, name, EntryKind.STREAM) is not None:
            return
        await self.flush()
        now = self.now()
        # The value lives in the stream; the entry only marks that this write was made.
        entry = JournalEntry(
            position, EntryKind.STREAM, name, "succeeded", output={"closed": closed},
            started_at=now, finished_at=now,
        )  # fmt: skip
        await self.store.write_stream(self.fence, entry, name, value, closed)

    @_escapes_the_body
    async def send(self, run_id: str, topic: str, value: JSON, idempotency_key: str | None) -> None:
        position = self._next()
        if self._replayed(position, topic, EntryKind.SEND) is not None:
            return
        await self.flush()
        # A replay after a crash between the send and its entry sends again: the key
        # of this position makes that the same message.
        key = idempotency_key or f"flowz:{self.row.id}:{position}"
        await self.store.send_message(run_id, topic, value, key)
        now = self.now()
        entry = JournalEntry(
            position, EntryKind.SEND, topic, "succeeded", output={"run_id": run_id},
            started_at=now, finished_at=now,
        )  # fmt: skip
        await self._append(entry)

    def patched(self, patch_id: str, deprecated: bool) -> bool:
        decision = patch_decision(self.journal, self.position, patch_id, deprecated)
        if decision == "marker":
            self.position += 1
        elif decision == "new":
            position = self._next()
            now = self.now()
            # Stored with the next durable call (or the end): patched() itself does not wait.
            self._entries.append(
                JournalEntry(
                    position, EntryKind.PATCH, patch_id, "succeeded",
                    started_at=now, finished_at=now,
                )
            )  # fmt: skip
        return decision != "old"

    async def sleep(self, seconds: float) -> None:
        position = self._next()
        entry = self._replayed(position, "flowz.sleep", EntryKind.SLEEP)
        if entry is not None:
            wake_at = json_number(entry.output)
            if wake_at > self.now():
                await self._suspend_until(wake_at, None, "sleep")
            return
        now = self.now()
        await self._suspend_until(
            now + seconds,
            JournalEntry(
                position,
                EntryKind.SLEEP,
                "flowz.sleep",
                "succeeded",
                output=now + seconds,
                started_at=now,
            ),
            "sleep",
        )


def _queue_of(definition: Definition, callers: str) -> str:
    """A child's queue: its function's, else its caller's."""
    queue = definition.options.queue
    return callers if queue is None else queue.name


def _first_leaf(group: BaseExceptionGroup[_StoreFailed]) -> _StoreFailed:
    first = group.exceptions[0]
    return first if isinstance(first, _StoreFailed) else _first_leaf(first)


class _DeadlinePassed(Exception):
    """The run's deadline passed before or while this attempt ran."""


def _timeout_error(row: ExecutionRow) -> RunTimeoutError:
    deadline = _dt.datetime.fromtimestamp(row.deadline or 0.0, _dt.UTC)
    return RunTimeoutError(
        f"run {row.id!r} ({row.name}) passed its deadline, {deadline:%Y-%m-%d %H:%M:%S} UTC "
        "(waiting included); its unfinished children were cancelled. To give it more "
        "time, raise @workflow(timeout=) or options(deadline=) and start it again"
    )


#: Children read per page when a parent collects a gather's results.
_OUTCOMES_PAGE = 1000


async def children_results(
    store: Store, parent_id: str, handles: Sequence[StepHandle[Any]], return_exceptions: bool
) -> list[Any] | None:
    """The children's results in handle order, or None while one is still unfinished.

    A failed or cancelled child's error is raised (or, with `return_exceptions`, put
    in its place), even while another is unfinished: the workflow fails fast. The
    children are read a page at a time, so a gather of 100,000 never holds 100,000
    rows at once, only its results.
    """
    at = {(h.position, h.index): i for i, h in enumerate(handles)}
    results: list[Any] = [None] * len(handles)
    ended = 0
    failed: list[tuple[int, BaseException]] = []
    async for row in _outcomes(store, parent_id, handles):
        i = at.get((row.position, row.child_index))
        if i is None:
            continue  # a child of the same positions that this wait does not ask for
        if row.status == Status.SUCCEEDED:
            results[i] = handles[i].definition.codec.load_result(row.output)
            ended += 1
        elif row.status in (Status.FAILED, Status.CANCELLED):
            results[i] = _child_error(row)
            failed.append((i, results[i]))
            ended += 1
    if failed and not return_exceptions:
        raise min(failed, key=lambda f: f[0])[1]  # the first failed handle, in call order
    return results if ended == len(handles) else None


async def _outcomes(
    store: Store, parent_id: str, handles: Sequence[StepHandle[Any]]
) -> AsyncIterator[ChildOutcome]:
    """The outcomes of the children at the handles' positions, a page at a time."""
    positions = sorted({h.position for h in handles})
    after: tuple[int, int] | None = None
    while True:
        page = await store.child_outcomes(parent_id, positions, after, _OUTCOMES_PAGE)
        for row in page:
            yield row
        if len(page) < _OUTCOMES_PAGE:
            return
        after = (page[-1].position, page[-1].child_index)


def _child_error(row: ChildOutcome) -> BaseException:
    if row.status == Status.CANCELLED:
        return RunCancelledError(f"child {row.name} ({row.id}) was cancelled")
    return load_error(row.error)


async def execute(
    store: Store, definition: Definition | None, claim: Claim, bus: EventBus | None = None
) -> None:
    """Run one attempt of a claimed execution and store how it ended.

    Raises LeaseLost if another worker took the execution over meanwhile.
    """
    row = claim.execution
    bus = bus or EventBus()
    with tracing.execution_span(row):
        if definition is None:  # claims filter by name; this guards a registry that changed
            error = UnknownWorkflowError(f"{row.name!r} is not registered in this worker")
            await _finish(store, bus, claim, None, error)
        elif definition.kind is Kind.STEP:
            await _execute_step(store, definition, claim, bus)
        else:
            await _execute_workflow(store, definition, claim, bus)


async def _finish(
    store: Store, bus: EventBus, claim: Claim, output: Any, error: BaseException | None
) -> None:
    """Store the end of an execution, then tell the observers."""
    row = claim.execution
    ok = error is None
    tracing.outcome(Status.SUCCEEDED if ok else Status.FAILED, error)
    await store.finish(
        claim.fence,
        Status.SUCCEEDED if ok else Status.FAILED,
        output,
        None if error is None else dump_error(error),
    )
    now = time.time()
    if row.kind == Kind.WORKFLOW:
        bus.publish(RunFinished(row.id, ok, None if ok else repr(error), now))
    if row.parent_id is not None and row.position is not None:
        bus.publish(
            ChildFinished(row.id, row.parent_id, row.position, row.name, ok, now, row.attempt)
        )


async def _execute_step(store: Store, definition: Definition, claim: Claim, bus: EventBus) -> None:
    row = claim.execution
    try:
        args, kwargs = definition.codec.load_args(row.input)
        ctx = StepContext(row.id, 0, definition.name, row.attempt)
        output = definition.codec.dump_result(await _invoke(definition, args, kwargs, ctx))
    except Exception as exc:
        if _retryable(definition.options, exc, row.attempt):
            delay = retry_delay(definition.options, row.attempt)
            tracing.outcome("retrying", exc)
            await store.retry_later(claim.fence, claim.now() + delay, dump_error(exc))
        else:
            await _finish(store, bus, claim, None, exc)
        return
    await _finish(store, bus, claim, output, None)


async def _execute_workflow(
    store: Store, definition: Definition, claim: Claim, bus: EventBus
) -> None:
    row = claim.execution
    journal = await store.read_journal(row.id) if claim.resumed else {}
    now = time.time()
    bus.publish(
        RunResumed(row.id, row.name, now)
        if claim.resumed
        else RunStarted(row.id, row.name, row.parent_id, now)
    )
    attempt = _Attempt(store, claim, journal, bus)
    var = step_context()
    token = var.set(attempt)
    left = math.inf if row.deadline is None else row.deadline - claim.now()
    try:
        with anyio.move_on_after(left) as deadline_scope:
            if left <= 0:
                raise _DeadlinePassed
            args, kwargs = definition.codec.load_args(row.input)
            result = await definition.fn(*args, **kwargs)
            if attempt.nondeterminism is not None:
                raise attempt.nondeterminism  # swallowed by the body; still fatal
            await attempt.flush()
            output = definition.codec.dump_result(result)
        if deadline_scope.cancelled_caught:
            raise _DeadlinePassed
    except _DeadlinePassed:
        await _finish(store, bus, claim, None, _timeout_error(row))
        return
    except _Suspend:
        tracing.outcome("suspended")
        return
    except _StoreFailed as failed:
        raise failed.error from None  # the worker gives the execution back
    except BaseExceptionGroup as group:
        # From a task group in the body: the store failing, then a suspension, win.
        store_failed = group.split(_StoreFailed)[0]
        if store_failed is not None:
            raise _first_leaf(store_failed).error from None
        if group.split(_Suspend)[0] is not None:
            tracing.outcome("suspended")
            return
        if group.split(Exception)[1] is not None:
            raise
        await _finish(store, bus, claim, None, attempt.nondeterminism or group)
        return
    except Exception as exc:
        await _finish(store, bus, claim, None, attempt.nondeterminism or exc)
        return
    finally:
        var.reset(token)
    await _finish(store, bus, claim, output, None)
