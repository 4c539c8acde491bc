"""The storage boundary: what the engine and the worker ask of a database. No SQL here."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .._types import JSON

__all__ = [
    "ChildOutcome",
    "Claim",
    "ExecutionRow",
    "Fence",
    "JournalEntry",
    "LeaseLost",
    "NewExecution",
    "QueueLimits",
    "QueueRow",
    "RunQuery",
    "ScheduleRow",
    "Store",
    "StreamItem",
    "WorkerRow",
]


class LeaseLost(BaseException):
    """A fenced write found this worker no longer owns the execution.

    A BaseException, so that a workflow's `except Exception` cannot swallow it.
    """


@dataclass(frozen=True, slots=True)
class Fence:
    """Proof of ownership: every write for a claimed execution carries it."""

    execution_id: str
    token: str


@dataclass(frozen=True, slots=True)
class NewExecution:
    """An execution to insert: a top-level run (no parent) or a child."""

    id: str
    root_id: str
    kind: str
    name: str
    input: JSON
    max_attempts: int = 1
    queue: str = "default"
    priority: int = 0
    parent_id: str | None = None
    position: int | None = None
    child_index: int | None = None
    run_at: float | None = None
    #: Epoch seconds (the database's clock) after which the workflow fails: RunTimeoutError.
    deadline: float | None = None
    #: What its queue's per_partition limit counts by.
    partition_key: str | None = None
    #: The W3C trace context (JSON) its spans continue: the caller's, or the gather's.
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """One row of flowz_executions."""

    id: str
    root_id: str
    parent_id: str | None
    position: int | None
    child_index: int | None
    kind: str
    name: str
    input: JSON
    output: JSON
    error: JSON
    status: str
    attempt: int
    max_attempts: int
    run_at: float
    queue: str
    priority: int
    lease_owner: str | None
    lease_expires_at: float | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    deadline: float | None = None
    partition_key: str | None = None
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """What a parent reads of one child: where it is, and how it ended, if it did."""

    id: str
    name: str
    position: int
    child_index: int
    status: str
    output: JSON
    error: JSON
    finished_at: float | None


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """A queue's stored limits (None: no limit)."""

    name: str
    concurrency: int | None = None
    per_worker: int | None = None
    rate_limit: int | None = None
    rate_period: float | None = None
    per_partition: int | None = None


@dataclass(frozen=True, slots=True)
class QueueRow:
    """A queue as `flowz queues` shows it: its limits and what it holds now."""

    limits: QueueLimits
    running: int
    #: Pending executions that are due (not sleeping or retrying later).
    waiting: int
    #: Starts within the last rate period (0 without a rate).
    recent_starts: int


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A workflow's cron schedule, and the last tick handled."""

    name: str
    cron: str
    timezone: str
    catch_up: str
    paused: bool = False
    last_tick: float | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """An execution a worker now owns until its lease expires."""

    execution: ExecutionRow
    fence: Fence
    #: True when the execution ran before, so its journal must be read.
    resumed: bool
    #: The database's clock (epoch seconds) when the claim was made.
    db_now: float
    _claimed_at: float = field(default_factory=time.monotonic, repr=False)

    def now(self) -> float:
        """The database's clock now, as this worker tracks it since the claim.

        Every time the engine stores (a durable sleep's or a retry's wake-up, journal
        timestamps) is on this clock, so a worker whose own clock drifts or jumps
        neither wakes work early nor parks it for hours.
        """
        return self.db_now + (time.monotonic() - self._claimed_at)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One durable call of a workflow, at its position."""

    position: int
    kind: str
    name: str
    #: succeeded | failed | retrying (a failed attempt with more to come) | scheduled (children)
    #: | waiting (a receive suspended until a message or its deadline)
    status: str
    output: JSON = None
    error: JSON = None
    attempt: int = 1
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Which runs `Store.list_runs` returns: newest first, keyset-paginated."""

    #: Only these statuses (any, when empty).
    statuses: tuple[str, ...] = ()
    #: Only runs of this journal name.
    name: str | None = None
    #: Created at or after this time (epoch seconds).
    since: float | None = None
    #: Created before this time (epoch seconds).
    until: float | None = None
    #: The children of this execution; None: top-level runs.
    parent: str | None = None
    #: (created_at, id) of the last row of the previous page: only rows after it.
    after: tuple[float, str] | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One value of a stream; the last item of a closed stream has `closed` set."""

    seq: int
    value: JSON
    closed: bool


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One row of flowz_workers."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    queue: str = "default"
    #: The journal names it runs (what it can claim).
    names: tuple[str, ...] = ()


class Store(Protocol):
    """What flowz needs from a database; SQLite and PostgreSQL pass one contract suite."""

    async def schema_version(self) -> int | None:
        """The database's schema version; None for an empty database. Cheap: no DDL."""

    async def migrate(self) -> list[str]:
        """Create the schema, or bring an older one to this flowz's version.

        Safe from several processes at once (one migrates, the others wait and find
        nothing left to do). Returns a description of each step applied.
        """

    async def aclose(self) -> None:
        """Release connections."""

    def wall_now(self) -> float:
        """The time as this store counts it, read in this process (epoch seconds).

        The wall clock, or the test store's time-skipping clock: what schedules tick by.
        """

    def change_mark(self) -> object:
        """A mark of the changes seen so far, to pass to `wait_for_change`.

        Take it before reading: a change between the read and the wait then still wakes.
        """

    async def wait_for_change(self, timeout: float, since: object | None = None) -> None:
        """Return when a writer may have made work runnable or finished, or at timeout.

        With `since` (from `change_mark()`), return at once if a change came after it.
        """

    # -- runs -------------------------------------------------------------
    async def create_run(self, run: NewExecution) -> tuple[ExecutionRow, bool]:
        """Insert a top-level run unless its id exists; return the row and whether it is new."""

    async def create_runs(self, runs: Sequence[NewExecution]) -> int:
        """Insert top-level runs in one transaction; how many were new.

        An id that exists with the same workflow and arguments is skipped; taken by
        anything else, the batch is refused (UsageError) and nothing of it is stored.
        """
        ...

    async def get_execution(self, execution_id: str) -> ExecutionRow | None:
        """The execution with this id, or None."""

    async def list_executions(self, root_id: str) -> list[ExecutionRow]:
        """Every execution of one run's tree, the root first, then by creation."""

    async def list_runs(self, query: RunQuery) -> list[ExecutionRow]:
        """Runs (or one execution's children) matching `query`, newest first, then by id.

        Top-level runs are read through an index per filter (status, name, or none),
        so a page costs the same over a hundred runs or a million.
        """

    async def count_runs(self, query: RunQuery) -> dict[str, int]:
        """How many runs match `query` per status (its statuses, cursor and limit ignored)."""
        ...

    async def pending_unknown(
        self, known: Sequence[str], before: float, limit: int
    ) -> list[ExecutionRow]:
        """Due pending executions created before `before` whose name is not in `known`."""
        ...

    async def running_by_worker(self) -> dict[str, int]:
        """How many executions each worker holds a lease on now, by worker id."""
        ...

    async def fork_run(
        self, source_id: str, new_id: str, at: int, rerun: Sequence[str]
    ) -> ExecutionRow:
        """A new pending run from an ended one, its journal and children before `at` copied.

        The copy keeps the source's name, input, queue and priority; the source is
        untouched. Children (with their subtrees and journals) scheduled before `at`
        are copied as they ended, except those in `rerun` (source ids of direct
        children), which start again from scratch. In one transaction.
        Raises RunNotFoundError for no such top-level run, UsageError for one that
        has not ended or a `new_id` in use.
        """

    async def prune(self, before: float, statuses: Sequence[str], limit: int) -> int:
        """Delete up to `limit` ended top-level runs created and finished before `before`.

        With everything that belongs to them: children, journals, messages, events and
        streams. Only runs whose status is in `statuses`. One short transaction; how
        many runs were deleted (0: none left).
        """

    async def count_prunable(self, before: float, statuses: Sequence[str]) -> int:
        """How many top-level runs `prune` would delete (for a dry run)."""

    async def cancel_run(self, run_id: str) -> int:
        """Cancel a run and every unfinished execution of its tree; how many were cancelled."""

    async def retry_run(self, run_id: str) -> bool:
        """Make a failed run and its failed descendants pending again; False if not failed."""

    # -- the worker's side ------------------------------------------------
    async def claim(
        self, worker_id: str, names: Sequence[str], queue: str, limit: int, lease_seconds: float
    ) -> list[Claim]:
        """Take up to `limit` due pending executions whose name is in `names`."""

    async def claim_limited(
        self, worker_id: str, names: Sequence[str], queue: str, limit: int, lease_seconds: float
    ) -> tuple[list[Claim], float | None]:
        """Claim from a queue with stored limits, never past them, whoever claims at once.

        Within the queue's concurrency (its running executions, fleet-wide), its rate
        (starts in the last period) and its per_partition limit, in one transaction
        that serialises the queue's claims. Also returns, when the rate held claims
        back, the seconds until the window has room again.
        """

    async def define_queues(self, queues: Sequence[QueueLimits]) -> None:
        """Store these queues' limits (a new deploy's limits replace the old ones)."""

    async def list_queues(self) -> list[QueueRow]:
        """Every queue that is defined or holds work, with its counts."""

    async def define_schedules(self, schedules: Sequence[ScheduleRow]) -> None:
        """Store these schedules' cron, time zone and catch-up; keep paused and last tick."""

    async def list_schedules(self) -> list[ScheduleRow]:
        """Every stored schedule."""

    async def pause_schedule(self, name: str, paused: bool) -> bool:
        """Pause or resume a schedule; False if there is none by that name."""

    async def tick_schedule(self, name: str, tick: float, run: NewExecution | None) -> bool:
        """Handle one tick of a schedule once: insert `run` (if any) and record the tick.

        Only if the schedule's last tick is before `tick`, in one transaction; False
        when another worker handled it (or a later tick) first.
        """

    async def next_due_in(
        self, names: Sequence[str], queue: str, also: float | None = None
    ) -> float | None:
        """Seconds until the earliest pending execution this worker could run is due, or None.

        `also`: another due time (epoch seconds), such as a schedule's next tick. On
        the test store's time-skipping clock, time jumps there when nothing runs.
        """

    async def register_worker(
        self,
        worker_id: str,
        host: str,
        pid: int,
        queue: str = "default",
        names: Sequence[str] = (),
    ) -> None:
        """Record a live worker, the queue it takes work from and the names it runs.

        Registering again (the worker's registry grew) replaces queue and names.
        """

    async def heartbeat(
        self, worker_id: str, lease_seconds: float, running: Sequence[str]
    ) -> set[str]:
        """Renew the worker's row and the leases of the executions it is `running`.

        Returns the ids of those it still holds. An execution the worker holds but no
        longer runs (its give-back failed) is not renewed: its lease lapses and it is reaped.
        """

    async def expire(self) -> int:
        """Make workflow executions past their deadline runnable now, however they wait.

        A worker that claims one fails it with RunTimeoutError. How many were woken.
        """

    async def lost(self, worker_id: str, running: Sequence[str]) -> set[str]:
        """Of the executions the worker is `running`, those it no longer holds. Read-only.

        Cancelled, finished by someone else, or taken over after its lease lapsed.
        """

    async def deregister_worker(self, worker_id: str) -> None:
        """Remove the worker's row and put back anything it still holds."""

    async def list_workers(self, host: str | None = None) -> list[WorkerRow]:
        """Registered workers, on one host or all."""

    async def reap(self, dead_worker_ids: Sequence[str]) -> int:
        """Make pending again every running execution whose lease expired or whose owner died."""

    # -- the engine's side (all fenced) -----------------------------------
    async def read_journal(self, execution_id: str) -> dict[int, JournalEntry]:
        """The whole journal of one execution, by position."""

    async def append_journal(self, fence: Fence, entry: JournalEntry) -> None:
        """Record (or replace) the entry at its position; raises LeaseLost."""

    async def schedule_children(
        self, fence: Fence, entries: Sequence[JournalEntry], children: Sequence[NewExecution]
    ) -> None:
        """Journal the entries and insert the children, in one transaction."""

    async def wait_for_children(
        self,
        fence: Fence,
        wait_position: int,
        positions: Sequence[int],
        entries: Sequence[JournalEntry] = (),
        children: Sequence[NewExecution] = (),
        first: bool = False,
    ) -> bool:
        """Insert entries and children, then suspend on the children at `positions`.

        In one transaction; returns False (and does not suspend) if every one of
        those children has already ended. With `first`, it suspends only while none
        of them has ended, until one does.
        """

    async def cancel_child(self, fence: Fence, entry: JournalEntry, child_id: str) -> None:
        """Cancel one unfinished child and its descendants, and journal `entry`, together."""

    async def child_results(self, parent_id: str, positions: Sequence[int]) -> list[ExecutionRow]:
        """The children at these positions, by position then index."""

    async def child_outcomes(
        self, parent_id: str, positions: Sequence[int], after: tuple[int, int] | None, limit: int
    ) -> list[ChildOutcome]:
        """One page of the outcomes of the children at these positions.

        By (position, index), those after `after`, at most `limit`: a parent reads a
        gather of any width in pages, without its arguments, never all rows at once.
        """
        ...

    async def suspend_until(self, fence: Fence, run_at: float, entry: JournalEntry | None) -> None:
        """Journal `entry` (if any) and make the execution pending again at `run_at`."""

    async def retry_later(self, fence: Fence, run_at: float, error: JSON) -> None:
        """A child step attempt failed: count the attempt and run it again at `run_at`."""

    async def finish(self, fence: Fence, status: str, output: JSON, error: JSON) -> None:
        """End the execution; in the same transaction, wake its parent if it waits on it."""

    # -- messages and events --------------------------------------------
    async def send_message(
        self, run_id: str, topic: str, value: JSON, idempotency_key: str | None
    ) -> bool:
        """Store a message for a workflow execution, in send order; False if a duplicate.

        Wakes the execution if it waits on `topic`. With an `idempotency_key` used
        for this execution before, nothing is stored and the result is False, even
        if the execution has ended since.
        Raises RunNotFoundError for no such workflow execution, RunEndedError for one
        that has ended.
        """

    async def receive(
        self, fence: Fence, position: int, topic: str, deadline: float | None
    ) -> tuple[bool, JSON]:
        """Take the oldest unread message on `topic`, journaled at `position`: (True, value).

        With none, at or past `deadline`: (True, None), journaled too. Else journal a
        waiting entry and suspend the execution until a message on `topic` or the
        deadline: (False, None). Safe to repeat: an entry already taken is returned.
        """

    async def set_event(self, fence: Fence, entry: JournalEntry, name: str, value: JSON) -> None:
        """Set the execution's event `name` to `value` and journal `entry`, together."""

    async def get_events(self, run_id: str) -> dict[str, JSON]:
        """The latest value of each event of a workflow execution."""

    async def write_stream(
        self, fence: Fence, entry: JournalEntry, name: str, value: JSON, closed: bool
    ) -> None:
        """Append `value` (or, `closed`, the end) to a stream and journal `entry`, together."""

    async def read_stream(self, run_id: str, name: str, after: int) -> list[StreamItem]:
        """A stream's items after seq `after`, in order."""

    async def release(self, fence: Fence) -> None:
        """Give an unfinished execution back (worker shutdown); it stays pending."""
