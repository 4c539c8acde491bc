"""The replay check: run workflow bodies against recorded journals, running and writing nothing.

Every durable call returns what the journal recorded; a call the journal disagrees
with is a NonDeterminismError, the error the run would hit on its next replay with
this code. Where the journal ends (the run had not got further), the check of
that run stops: what comes after is new code running for the first time.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._context import DurableCall, ExecutionContext, StepHandle, step_context
from ._engine import check_replayed, check_width, children_results, patch_decision
from ._registry import Registry
from ._serde import dump_error, error_line, load_error
from ._types import JSON, EntryKind, Kind, Status, json_number, json_object
from .errors import NonDeterminismError
from .store._protocol import ExecutionRow, JournalEntry, Store

__all__ = ["ReplayReport", "ReplayResult", "replay_execution"]


class _JournalEnd(BaseException):
    """The body made a call past the end of the journal: the check of this run is done.

    A BaseException, so that a workflow's `except Exception` cannot swallow it.
    """


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """How one recorded workflow execution replays with the code as it is now."""

    run_id: str
    name: str
    #: The run's status when it was checked.
    status: str
    #: None when the code replays the journal; else what would go wrong.
    problem: str | None = None
    #: The NonDeterminismError a replay would raise, when that is the problem.
    error: NonDeterminismError | None = None

    @property
    def ok(self) -> bool:
        """Whether the current code replays this run's journal."""
        return self.problem is None


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What `flowz.testing.replay` found: one result per workflow execution checked.

    Examples:
        >>> report = await replay(client, since=timedelta(days=7))
        >>> assert report.ok, report.describe()
    """

    results: list[ReplayResult]

    @property
    def failures(self) -> list[ReplayResult]:
        """The executions the current code would not replay."""
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        """True when every checked execution replays."""
        return not self.failures

    def describe(self) -> str:
        """One line per failure, or how many runs replayed."""
        if self.ok:
            return f"{len(self.results)} workflow execution(s) replay with this code"
        return "\n".join(f"{r.run_id} ({r.name}, {r.status}): {r.problem}" for r in self.failures)


class _ReplayContext(ExecutionContext):
    """Durable calls answered from a journal; a call past its end ends the check."""

    def __init__(self, store: Store, row: ExecutionRow, journal: dict[int, JournalEntry]):
        self.store = store
        self.row = row
        self.journal = journal
        self.position = 0

    def _entry(self, name: str, kind: str) -> JournalEntry:
        position = self.position
        self.position += 1
        entry = check_replayed(self.journal, self.row.id, position, name, kind)
        if entry is None:
            raise _JournalEnd
        return entry

    def now(self) -> float:
        return time.time()

    async def call_step(self, call: DurableCall[Any]) -> Any:
        entry = self._entry(call.definition.name, EntryKind.STEP)
        if entry.status == "succeeded":
            return call.definition.codec.load_result(entry.output)
        if entry.status == "failed":
            raise load_error(entry.error)
        raise _JournalEnd  # a retry was pending: the run had not got past it

    def schedule(self, calls: Sequence[DurableCall[Any]]) -> list[StepHandle[Any]]:
        if not calls:
            return []
        names = sorted({c.definition.name for c in calls})
        name = names[0] if len(names) == 1 else ",".join(names)
        kind = EntryKind.SCHEDULE if len(calls) == 1 else EntryKind.GATHER
        entry = self._entry(name, kind)
        check_width(entry, self.row.id, len(calls))
        return [StepHandle[Any](c.definition, entry.position, i) for i, c in enumerate(calls)]

    async def _results(
        self, handles: Sequence[StepHandle[Any]], return_exceptions: bool
    ) -> list[Any]:
        results = await children_results(self.store, self.row.id, handles, return_exceptions)
        if results is None:
            raise _JournalEnd  # the run was still waiting for a child
        return results

    async def wait(self, handles: Sequence[StepHandle[Any]], return_exceptions: bool) -> list[Any]:
        self.position += 1  # a wait takes a position and journals nothing
        return await self._results(handles, return_exceptions) if handles else []

    async def wait_first(
        self, handles: Sequence[StepHandle[Any]], return_exceptions: bool
    ) -> tuple[int, Any]:
        entry = self._entry("flowz.wait_first", EntryKind.FIRST)
        chosen = int(json_number(json_object(entry.output)["index"]))
        return chosen, (await self._results([handles[chosen]], return_exceptions))[0]

    async def cancel_child(self, handle: StepHandle[Any]) -> None:
        self._entry(handle.definition.name, EntryKind.CANCEL)

    async def record(self, name: str, kind: str, make: Any) -> Any:
        return self._entry(name, kind).output

    async def sleep(self, seconds: float) -> None:
        self._entry("flowz.sleep", EntryKind.SLEEP)

    def patched(self, patch_id: str, deprecated: bool) -> bool:
        decision = patch_decision(self.journal, self.position, patch_id, deprecated)
        if decision in ("marker", "new"):
            self.position += 1
        return decision != "old"

    async def recv(self, topic: str, timeout: float | None) -> JSON:
        entry = self._entry(topic, EntryKind.RECV)
        if entry.status != "succeeded":
            raise _JournalEnd  # it was waiting for a message
        return entry.output

    async def set_event(self, name: str, value: JSON) -> None:
        self._entry(name, EntryKind.EVENT)

    async def write_stream(self, name: str, value: JSON, closed: bool) -> None:
        self._entry(name, EntryKind.STREAM)

    async def send(self, run_id: str, topic: str, value: JSON, idempotency_key: str | None) -> None:
        self._entry(topic, EntryKind.SEND)


def _nondeterminism(exc: BaseException) -> NonDeterminismError | None:
    if isinstance(exc, NonDeterminismError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _nondeterminism(inner)
            if found is not None:
                return found
    return None


def _reached_the_end(exc: BaseException) -> bool:
    if isinstance(exc, _JournalEnd):
        return True
    return isinstance(exc, BaseExceptionGroup) and any(
        _reached_the_end(inner) for inner in exc.exceptions
    )


async def replay_execution(store: Store, registry: Registry, row: ExecutionRow) -> ReplayResult:
    """Replay one workflow execution's journal with the registered code; run no step."""
    definition = registry.get(row.name)
    if definition is None or definition.kind is not Kind.WORKFLOW:
        return ReplayResult(
            row.id,
            row.name,
            row.status,
            f"no workflow {row.name!r} in this code: a worker could not resume it "
            "(renamed or moved? keep the old name with @workflow(name=...))",
        )
    journal = await store.read_journal(row.id)
    ctx = _ReplayContext(store, row, journal)
    var = step_context()
    token = var.set(ctx)
    try:
        args, kwargs = definition.codec.load_args(row.input)
        await definition.fn(*args, **kwargs)
    except BaseException as exc:
        error = _nondeterminism(exc)
        if error is not None:
            return ReplayResult(row.id, row.name, row.status, str(error), error)
        if _reached_the_end(exc):
            return ReplayResult(row.id, row.name, row.status)
        if not isinstance(exc, Exception):
            raise
        if row.status == Status.FAILED and _same_failure(exc, row.error):
            return ReplayResult(row.id, row.name, row.status)
        return ReplayResult(
            row.id,
            row.name,
            row.status,
            f"the workflow now raises {type(exc).__name__}: {exc} (the run recorded "
            f"{error_line(row.error) if row.error else row.status})",
        )
    finally:
        var.reset(token)
    unread = [p for p in journal if p >= ctx.position]
    if unread:
        left = journal[min(unread)]
        error = NonDeterminismError(
            row.id, min(unread), "the end of the workflow", f"{left.kind} {left.name}"
        )
        return ReplayResult(row.id, row.name, row.status, str(error), error)
    return ReplayResult(row.id, row.name, row.status)


def _same_failure(exc: Exception, recorded: JSON) -> bool:
    """Whether the replay raised what the run failed with (a failed step's error, replayed)."""
    return isinstance(recorded, dict) and error_line(recorded) == error_line(dump_error(exc))
