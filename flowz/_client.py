"""`flowz.Client`: one database, its store and connections; runs, starts and handles.

`wf.run()`, `wf.start()` and `flowz.run()` open an implicit client for the call,
configured by the `FLOWZ_*` variables, and close it before they return; a
`Client` opened once makes the database, the settings and the lifetime explicit
and saves the opening per call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import math
import time
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, final, overload

import anyio
import anyio.lowlevel

from ._config import Settings
from ._context import DurableFunction, check_run_arguments, check_workflow
from ._events import EventBus
from ._ids import new_run_id
from ._logging import get_logger
from ._progress_model import ProgressModel
from ._registry import Definition, Registry
from ._runs import (
    JournalInfo,
    RunInfo,
    RunPage,
    decode_cursor,
    encode_cursor,
    journal_info,
    run_info,
)
from ._serde import abbreviated, checked_text, error_line, json_value, load_error
from ._tracing import caller_context
from ._types import JSON, EntryKind, Kind, Status, json_number, json_object
from ._waiting import why_waiting
from ._worker import PRUNE_BATCH, Worker, queue_limits
from .errors import (
    RunCancelledError,
    RunNotFoundError,
    StoreError,
    UsageError,
)
from .store import open_store
from .store._protocol import ExecutionRow, NewExecution, RunQuery, Store

if TYPE_CHECKING:
    from ._clock import Clock
    from .progress import ProgressView

__all__ = ["Client", "RunHandle", "follow_stream"]

P = ParamSpec("P")
R = TypeVar("R")

log = get_logger("flowz.client")
# How long a run may wait for its first worker before result() says why it waits.
_EXPLAIN_AFTER_SECONDS = 5.0
#: The most runs one list_runs page holds.
MAX_PAGE = 1000


@final
class Client:
    """A connection to one flowz database: start runs, run them here, find them again.

    An async context manager: it opens the store (on PostgreSQL, the pool and the
    LISTEN connection) on entry and closes everything on exit. Nothing runs in
    the background: a worker runs only inside `client.run()`.

    Args:
        url: the database (`sqlite:///path.db`, `postgresql://...`); wins over
            `settings.database_url`.
        settings: how to connect and run (default: `flowz.Settings.from_env()`, the
            `FLOWZ_*` variables).
        clock: the store's clock; `flowz.testing` passes its time-skipping one.
        create: make the schema in a new database (default). False: open an existing
            one only, so a mistyped SQLite path is an error, not a new empty file.

    Examples:
        >>> async with flowz.Client("sqlite:///runs.db") as client:
        ...     print(await client.run(fan, 1000))
        ...     handle = await client.start(fan.options(id="fan-1"), 10)
        ...     print(await handle.status())
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        create: bool = True,
    ) -> None:
        if settings is None:  # an explicit url wins over FLOWZ_DATABASE_URL, even a bad one
            settings = Settings.from_env(database_url=url)
        elif url is not None:
            settings = dataclasses.replace(settings, database_url=url)
        self.settings = settings
        self._clock = clock
        self._create_schema = create
        self._store: Store | None = None
        self._token: object | None = None
        # Idle in-process workers of earlier runs, by registry: registering, reaping and
        # deregistering per call cost more than a small run.
        self._workers: dict[Registry, Worker] = {}
        self._queues_defined: set[str] = set()

    def __repr__(self) -> str:
        return f"<flowz.Client {self.settings.database_url}>"

    @property
    def store(self) -> Store:
        """The open store (for the CLI, tests and tools built on flowz)."""
        if self._store is None:
            raise UsageError(
                "this flowz.Client is not open: use `async with flowz.Client(...) as client:`"
            )
        return self._store

    @property
    def is_open(self) -> bool:
        """Whether the client is open and belongs to the running event loop."""
        return self._store is not None and self._token == _loop_key()

    async def __aenter__(self) -> Client:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open the store (creating the schema on a new database); `async with` calls it."""
        if self._store is None:
            self._store = await open_store(
                self.settings, clock=self._clock, create=self._create_schema
            )
            self._token = _loop_key()

    async def aclose(self) -> None:
        """Stop this client's idle workers and close the store and its connections."""
        store, self._store = self._store, None
        if store is None:
            return
        with anyio.CancelScope(shield=True):
            workers, self._workers = list(self._workers.values()), {}
            for worker in workers:
                with contextlib.suppress(StoreError):
                    await worker.close()
            await store.aclose()

    # -- runs ---------------------------------------------------------------
    async def start(
        self, wf: DurableFunction[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> RunHandle[R]:
        """Enqueue a run for the workers and return its handle (no worker runs here).

        Options come from the workflow: `client.start(wf.options(id="x"), ...)`.
        """
        row = await self._create(wf, args, kwargs)
        return RunHandle._new(row.id, self, wf.definition)

    async def run(self, wf: DurableFunction[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Create (or find, by id) the run, work on it in this process until it ends.

        Returns the result or raises the run's error. The live view follows
        `wf.options(progress=...)`, else the settings.
        """
        row = await self._create(wf, args, kwargs)
        if Status(row.status).is_terminal:
            try:
                return cast(R, _outcome(row, wf.definition))
            except Exception as exc:
                if row.status == Status.FAILED:
                    exc.add_note(
                        f"run {row.id!r} had failed already; to resume it (completed steps are "
                        f"kept): `flowz retry {row.id}` or `await client.handle(...).retry()`"
                    )
                raise
        row = await self._work_on(wf, row)
        return cast(R, _outcome(row, wf.definition))

    async def send(
        self, run_id: str, topic: str, value: Any, *, idempotency_key: str | None = None
    ) -> bool:
        """Send a message to a running workflow: its `flowz.recv(topic)` gets it, in order.

        A message sent before the workflow reaches `recv` is kept until it does. The
        same `idempotency_key` twice stores one message (a webhook delivered twice):
        the repeat returns False, even after the run has ended, and stores nothing.
        Raises RunNotFoundError for an unknown run, RunEndedError for one that has
        ended, SerializationError for a value JSON cannot store.

        Examples:
            >>> await client.send("order-7", "approval", {"approved": True})
        """
        payload = message(topic, value, idempotency_key)
        return await self.store.send_message(run_id, topic, payload, idempotency_key)

    # -- finding and operating runs -----------------------------------------
    async def list_runs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        name: str | DurableFunction[Any, Any] | None = None,
        since: _dt.datetime | _dt.timedelta | None = None,
        until: _dt.datetime | None = None,
        parent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs, newest first, a page at a time: top-level runs, or `parent`'s children.

        Args:
            status: one status (`"failed"`, `flowz.Status.FAILED`) or several.
            name: the workflow (a decorated function, or its journal name).
            since: created at or after this aware datetime, or this long ago (timedelta).
            until: created before this aware datetime.
            parent: the children (steps and workflows) of this execution instead.
            limit: runs per page, 1 to 1000.
            cursor: a page's `next_cursor`, with the same filters, for the page after it.

        Pages are keyset-paginated: runs created while you page do not shift them,
        so no run appears twice or is skipped.

        Examples:
            >>> page = await client.list_runs(status="failed", since=timedelta(days=1))
            >>> for run in page:
            ...     print(run.id, run.error_type, run.error_message)
        """
        if not 1 <= limit <= MAX_PAGE:
            raise UsageError(f"limit={limit}: a page holds 1 to {MAX_PAGE} runs")
        query = _run_query(name, since, until, parent)
        query = dataclasses.replace(
            query,
            statuses=_statuses(status),
            after=None if cursor is None else decode_cursor(cursor),
            limit=limit + 1,  # one more: is there a next page?
        )
        rows = await self.store.list_runs(query)
        more = len(rows) > limit
        rows = rows[:limit]
        return RunPage([run_info(r) for r in rows], encode_cursor(rows[-1]) if more else None)

    async def count_runs(
        self,
        *,
        name: str | DurableFunction[Any, Any] | None = None,
        since: _dt.datetime | _dt.timedelta | None = None,
        until: _dt.datetime | None = None,
        parent: str | None = None,
    ) -> dict[Status, int]:
        """How many runs there are of each status, with the filters of `list_runs`.

        Statuses no run has are left out.

        Examples:
            >>> await client.count_runs(since=timedelta(hours=1))
            {<Status.SUCCEEDED: 'succeeded'>: 120, <Status.FAILED: 'failed'>: 3}
        """
        counts = await self.store.count_runs(_run_query(name, since, until, parent))
        return {Status(status): n for status, n in sorted(counts.items())}

    async def get_run(self, run_id: str) -> RunInfo:
        """The run (or child execution) with this id; RunNotFoundError if there is none.

        Examples:
            >>> (await client.get_run("order-7")).status
            <Status.SUCCEEDED: 'succeeded'>
        """
        row = await self.store.get_execution(run_id)
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r}: see `flowz list`")
        return run_info(row)

    async def journal(self, run_id: str) -> list[JournalInfo]:
        """A workflow execution's journal: its durable calls, by position.

        A child step has none (its result is on `get_run`).

        Examples:
            >>> for entry in await client.journal("order-7"):
            ...     print(entry.position, entry.kind, entry.name, entry.status)
        """
        await self.get_run(run_id)
        entries = await self.store.read_journal(run_id)
        return [journal_info(entries[p]) for p in sorted(entries)]

    async def fork(self, run_id: str, *, at: int, id: str | None = None) -> RunHandle[Any]:
        """Start a new run of an ended run's workflow that replays its journal up to `at`.

        Durable calls before position `at` (see `journal()`) return what they
        recorded, children scheduled before it included; from `at` on, the code as it
        is now runs. The original run is untouched. A run that has not ended is refused
        (cancel it first). Children the original run left unfinished when it ended
        (cancelled with it) run again; one it cancelled itself stays cancelled.
        Events, streams and unread messages are not copied.

        Args:
            run_id: the ended run to fork.
            at: the first position to run again; 0 runs the whole workflow again.
            id: the new run's id (default: a new time-ordered UUID).

        Examples:
            >>> new = await client.fork("order-7", at=3)
            >>> await new.result()
        """
        if isinstance(at, bool) or not isinstance(at, int) or at < 0:
            raise UsageError(f"at={at!r}: a fork position is a journal position, 0 or more")
        source = await self.store.get_execution(run_id)
        if source is None:
            raise RunNotFoundError(f"no run with id {run_id!r}: see `flowz list`")
        journal = await self.store.read_journal(run_id)
        end = max(journal, default=-1) + 1
        if at > end:
            raise UsageError(
                f"at={at} is past the end of run {run_id!r}, whose journal ends at position "
                f"{end - 1} (see `flowz journal {run_id}`): fork at 0 to {end}"
            )
        rerun = await self._unfinished_children(run_id, journal, at)
        new_id = checked_text(id, "fork(id=...)") if id else new_run_id()
        row = await self.store.fork_run(run_id, new_id, at, rerun)
        return RunHandle._new(row.id, self, None)

    async def _unfinished_children(
        self, run_id: str, journal: dict[int, Any], at: int
    ) -> list[str]:
        """The children before `at` cancelled by the run's end, not by the run itself."""
        scheduled = [
            p
            for p, e in journal.items()
            if p < at and e.kind in (EntryKind.SCHEDULE, EntryKind.GATHER)
        ]
        if not scheduled:
            return []
        cancelled_by_run = {
            (int(json_number(o["position"])), int(json_number(o["index"])))
            for p, e in journal.items()
            if p < at and e.kind == EntryKind.CANCEL and (o := json_object(e.output))
        }
        return [
            child.id
            for child in await self.store.child_results(run_id, sorted(scheduled))
            if child.status == Status.CANCELLED
            and (child.position, child.child_index) not in cancelled_by_run
        ]

    async def prune(
        self,
        older_than: _dt.timedelta,
        *,
        status: str | Iterable[str] = ("succeeded", "failed", "cancelled"),
        dry_run: bool = False,
    ) -> int:
        """Delete ended runs created and ended longer ago than `older_than`; how many.

        Each run goes with everything it owns: children, journals, messages, events,
        streams. A run that has not ended (and so no child of one) is never deleted.
        The work is done in transactions of a hundred runs, with a pause as long as
        each took, so workers never wait on it for long. With `dry_run`, only counts.

        Examples:
            >>> await client.prune(timedelta(days=30))
            1204
        """
        statuses = _statuses(status)
        open_ = [s for s in statuses if not Status(s).is_terminal]
        if open_ or not statuses:
            raise UsageError(
                f"status={status!r}: only ended runs can be pruned; choose among "
                "succeeded, failed, cancelled"
            )
        if not isinstance(older_than, _dt.timedelta) or older_than < _dt.timedelta(0):
            raise UsageError(
                f"older_than={older_than!r}: pass a duration of 0 or more, e.g. timedelta(days=30)"
            )
        before = time.time() - older_than.total_seconds()
        if dry_run:
            return await self.store.count_prunable(before, statuses)
        deleted = 0
        while True:
            started = time.monotonic()
            batch = await self.store.prune(before, statuses, PRUNE_BATCH)
            deleted += batch
            if batch < PRUNE_BATCH:
                return deleted
            # As long a pause as the batch took: the prune takes at most half of the
            # database's time, and workers' writes queue behind one batch at most.
            await anyio.sleep(time.monotonic() - started)

    @overload
    def handle(self, run_id: str) -> RunHandle[Any]: ...
    @overload
    def handle(self, run_id: str, wf: DurableFunction[Any, R]) -> RunHandle[R]: ...
    def handle(self, run_id: str, wf: DurableFunction[Any, Any] | None = None) -> RunHandle[Any]:
        """A handle to an existing run, by id; with `wf`, its result comes back typed."""
        return RunHandle._new(run_id, self, None if wf is None else check_workflow(wf).definition)

    async def start_many(
        self,
        wf: DurableFunction[P, R],
        calls: Iterable[Any],
        *,
        ids: Iterable[str] | None = None,
        batch: int = 1000,
    ) -> list[RunHandle[R]]:
        """Enqueue one run per item of `calls`, `batch` runs per transaction; their handles.

        Each item is one run's arguments: a tuple of positional arguments, a dict of
        keyword arguments, or the single argument of a one-parameter workflow (wrap a
        tuple or dict argument in a tuple: `(value,)`). `ids` names the runs, in the
        same order (default: new time-ordered UUIDs); a run whose id exists with the same
        arguments is not started again. Options come from the workflow
        (`wf.options(priority=...)`), but for `id`.

        Every argument is checked before anything is stored. A batch holding an id
        taken by another run is refused whole, with the batches before it started.

        Examples:
            >>> handles = await client.start_many(resize, [(url, 800) for url in urls])
            >>> await client.start_many(report, [{"day": d} for d in days], ids=days)
        """
        wf = check_workflow(wf)
        if wf.run_options.id is not None:
            raise UsageError(
                "start_many names its runs with ids=[...], not wf.options(id=...): an id "
                "names one run"
            )
        if batch < 1:
            raise UsageError(f"batch={batch}: a batch holds at least one run")
        runs = []
        trace_context = caller_context()  # the same caller for every run
        for item in calls:
            args, kwargs = (
                (item, {})
                if isinstance(item, tuple)
                else ((), item)
                if isinstance(item, dict)
                else ((item,), {})
            )
            check_run_arguments(wf, kwargs)
            runs.append(self._new_run(wf, args, kwargs, new_run_id(), trace_context))
        if ids is not None:
            names = [checked_text(n, "start_many(ids=...): a run id") for n in ids]
            if len(names) != len(runs):
                raise UsageError(f"ids: {len(names)} ids for {len(runs)} calls: give one per call")
            if len(set(names)) != len(names):
                taken = next(n for n in names if names.count(n) > 1)
                raise UsageError(f"ids: {taken!r} is given twice: an id names one run")
            runs = [
                dataclasses.replace(r, id=n, root_id=n) for r, n in zip(runs, names, strict=True)
            ]
        await self._define_queue(wf)
        started = 0
        for first in range(0, len(runs), batch):
            try:
                await self.store.create_runs(runs[first : first + batch])
            except UsageError as exc:
                raise UsageError(
                    f"{exc}; the {started} runs before this batch were started"
                ) from None
            started += len(runs[first : first + batch])
        return [RunHandle._new(r.id, self, wf.definition) for r in runs]

    def _new_run(
        self,
        wf: DurableFunction[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_id: str,
        trace_context: str | None,
    ) -> NewExecution:
        """The row of a new top-level run of `wf`; its arguments are checked here."""
        payload = wf.definition.codec.dump_args(args, kwargs)
        deadlines = []  # the earlier of the workflow's timeout and the run's deadline wins
        if wf.definition.options.timeout is not None:
            deadlines.append(time.time() + wf.definition.options.timeout)
        if wf.run_options.deadline is not None:
            deadlines.append(wf.run_options.deadline.timestamp())
        queue = wf.definition.options.queue
        return NewExecution(
            id=run_id,
            root_id=run_id,
            kind=Kind.WORKFLOW.value,
            name=wf.name,
            input=payload,
            queue=self.settings.queue if queue is None else queue.name,
            priority=wf.run_options.priority,
            deadline=min(deadlines, default=None),
            partition_key=wf.run_options.partition,
            trace_context=trace_context,
        )

    async def _define_queue(self, wf: DurableFunction[Any, Any]) -> None:
        queue = wf.definition.options.queue
        if queue is not None and queue.name not in self._queues_defined:
            # Stored with its first run, so `flowz queues` shows it before a worker starts.
            await self.store.define_queues([queue_limits(queue)])
            self._queues_defined.add(queue.name)

    async def _create(
        self, wf: DurableFunction[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ExecutionRow:
        wf = check_workflow(wf)
        check_run_arguments(wf, kwargs)
        run_id = wf.run_options.id or new_run_id()
        new = self._new_run(wf, args, kwargs, run_id, caller_context())
        payload = new.input
        await self._define_queue(wf)
        row, created = await self.store.create_run(new)
        if not created and (row.name != wf.name or row.parent_id is not None):
            raise UsageError(
                f"the id {run_id!r} already belongs to a run of {row.name}, not of {wf.name}: "
                "choose another id"
            )
        if not created and row.input != payload:
            raise UsageError(
                f"run {run_id!r} already exists with other arguments ({abbreviated(row.input)}, "
                f"not {abbreviated(payload)}): an id names one run; choose another id for "
                "new arguments, or pass the same ones to resume it or get its result"
            )
        return row

    async def _work_on(self, wf: DurableFunction[Any, Any], row: ExecutionRow) -> ExecutionRow:
        bus = EventBus()
        view = _view(wf.run_options.progress, self.settings)
        if view is not None:
            # A run that ran before (a crash, a retry) is drawn from its stored state first.
            resumed = row.started_at is not None
            view.follow(row.id, await ProgressModel.load(self.store, row.id) if resumed else None)
            bus.subscribe(view)
        # This client's idle worker, or (first call, or runs awaited side by side) a new one.
        worker = self._workers.pop(wf.registry, None)
        if worker is None:
            worker = Worker(self.store, wf.registry, self.settings, embedded=True)
            await worker.open()
        worker.bus = bus
        with view or contextlib.nullcontext():
            try:
                row = await _work_until_done(worker, self.store, row.id, self.settings)
                if view is not None:
                    # The last frame is the stored truth: children cancelled with the run,
                    # the failed ones and their errors (events from other workers never came).
                    view.follow(row.id, await ProgressModel.load(self.store, row.id))
            except BaseException:
                with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                    await worker.close()
                raise
        if wf.registry in self._workers or self._store is None:
            with anyio.CancelScope(shield=True):  # another call parked one: one is enough
                await worker.close()
        else:
            self._workers[wf.registry] = worker
        if view is not None:
            ok = row.status == Status.SUCCEEDED
            view.summary(row.status, None if ok else _error_line(row))
        return row


def _statuses(status: str | Iterable[str] | None) -> tuple[str, ...]:
    """Status filter values, checked: a typo is an error, not an empty page."""
    if status is None:
        return ()
    values = (status,) if isinstance(status, str) else tuple(status)
    known = {s.value for s in Status}
    for value in values:
        if value not in known:
            raise UsageError(f"status {value!r} is not a run status: use one of {sorted(known)}")
    return tuple(dict.fromkeys(str(Status(v).value) for v in values))


def message(topic: str, value: Any, idempotency_key: str | None) -> JSON:
    """A message's value as stored, its topic and key checked first."""
    checked_text(topic, "the topic")
    if idempotency_key is not None:
        checked_text(idempotency_key, "the idempotency key")
    return json_value(value, f"the message on {topic!r}")


def _run_query(
    name: str | DurableFunction[Any, Any] | None,
    since: _dt.datetime | _dt.timedelta | None,
    until: _dt.datetime | None,
    parent: str | None,
) -> RunQuery:
    """The filters `list_runs` and `count_runs` share, checked."""
    if isinstance(name, DurableFunction):
        name = name.name
    if isinstance(since, _dt.timedelta):
        since = _dt.datetime.now(_dt.UTC) - since
    return RunQuery(
        name=name,
        since=None if since is None else _epoch(since, "since"),
        until=None if until is None else _epoch(until, "until"),
        parent=parent,
    )


def _epoch(moment: _dt.datetime, what: str) -> float:
    if moment.tzinfo is None:
        raise UsageError(
            f"{what}={moment!r} has no time zone: pass an aware datetime, e.g. "
            "datetime.now(timezone.utc) - timedelta(days=1)"
        )
    return moment.timestamp()


def _outcome(row: ExecutionRow, definition: Definition | None) -> Any:
    if row.status == Status.SUCCEEDED:
        return row.output if definition is None else definition.codec.load_result(row.output)
    if row.status == Status.CANCELLED:
        raise RunCancelledError(f"run {row.id!r} was cancelled")
    raise load_error(row.error)


def _error_line(row: ExecutionRow) -> str:
    return error_line(row.error) if row.error else row.status


def _view(progress: object, settings: Settings) -> ProgressView | None:
    from .progress import ProgressView  # rich loads only when something is drawn

    if isinstance(progress, ProgressView):
        return progress
    if progress is None:
        progress = settings.progress
    if not isinstance(progress, bool):
        raise UsageError(f"progress={progress!r}: use True, False or a flowz.progress.ProgressView")
    return ProgressView() if progress else None


async def _wait_terminal(
    store: Store, run_id: str, poll: float, deadline: float, *, lease_seconds: float | None = None
) -> ExecutionRow:
    """The run's row once it ended.

    With `lease_seconds`, a run still queued after a few seconds gets a warning saying
    why (no live worker knows it, or takes its queue), once.
    """
    explain_at = math.inf if lease_seconds is None else time.monotonic() + _EXPLAIN_AFTER_SECONDS
    while True:
        mark = store.change_mark()
        row = await store.get_execution(run_id)
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        if Status(row.status).is_terminal:
            return row
        now = time.monotonic()
        if lease_seconds is not None and now >= explain_at:
            explain_at = math.inf
            reason = (
                None if row.started_at is not None else await why_waiting(store, row, lease_seconds)
            )
            if reason is not None:
                log.warning("flowz: run %s has not started: %s", run_id, reason)
        remaining = deadline - now
        if remaining <= 0:
            raise TimeoutError(f"run {run_id!r} is still {row.status}")
        await store.wait_for_change(min(poll, remaining, max(explain_at - now, 0)), mark)


async def _work_until_done(
    worker: Worker, store: Store, run_id: str, settings: Settings
) -> ExecutionRow:
    """Run `worker` until the run ends; if the worker stops first on a store error, raise it."""
    failure: StoreError | None = None
    row: ExecutionRow | None = None
    async with anyio.create_task_group() as tg:

        async def work() -> None:
            nonlocal failure
            try:
                await worker.work()
            except StoreError as exc:  # logged by the worker too
                failure = exc
                tg.cancel_scope.cancel()

        tg.start_soon(work)
        row = await _wait_terminal(store, run_id, settings.poll_seconds, math.inf)
        worker.stop()
    if row is None:
        assert failure is not None  # only a failed worker cancels the wait
        raise failure
    return row


@final
class RunHandle(Generic[R]):
    """A workflow run in the database; from `wf.start()`, `client.start()` or `client.handle()`."""

    def __init__(self) -> None:
        raise TypeError("RunHandle objects come from wf.start(); they are not built directly")

    @classmethod
    def _new(cls, run_id: str, client: Client, definition: Definition | None) -> RunHandle[R]:
        handle = cls.__new__(cls)
        handle.id = run_id
        handle._client = client
        handle._definition = definition
        return handle

    id: str
    _client: Client
    _definition: Definition | None

    def __repr__(self) -> str:
        name = self._definition.name if self._definition else "run"
        return f"<RunHandle {name} id={self.id!r}>"

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[Store]:
        # A handle outlives its client (wf.start() closes the implicit one; a handle may
        # be kept after `async with` or used in another event loop): then it opens one.
        if self._client.is_open:
            yield self._client.store
        else:
            async with Client(settings=self._client.settings) as client:
                yield client.store

    async def _row(self, store: Store) -> ExecutionRow:
        row = await store.get_execution(self.id)
        if row is None:
            raise RunNotFoundError(f"no run with id {self.id!r}")
        return row

    async def status(self) -> Status:
        """The run's current status."""
        async with self._store() as store:
            return Status((await self._row(store)).status)

    async def result(self, *, timeout: float | None = None) -> R:
        """Wait for the run to end (a worker must run it); return its result or raise its error.

        A run that no worker has started after a few seconds is logged (a warning of
        the `flowz.client` logger) with the reason: no live worker knows its
        function, or none takes its queue.
        """
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        async with self._store() as store:
            settings = self._client.settings
            row = await _wait_terminal(
                store,
                self.id,
                settings.poll_seconds,
                deadline,
                lease_seconds=settings.lease_seconds,
            )
        return cast(R, _outcome(row, self._definition))

    async def send(self, topic: str, value: Any, *, idempotency_key: str | None = None) -> bool:
        """Send a message to this run (see `Client.send`); False for a repeated key.

        Examples:
            >>> await handle.send("approval", {"approved": True})
        """
        payload = message(topic, value, idempotency_key)
        async with self._store() as store:
            return await store.send_message(self.id, topic, payload, idempotency_key)

    async def events(self) -> dict[str, Any]:
        """The latest value of each event the run has set with `flowz.set_event`."""
        async with self._store() as store:
            return await store.get_events(self.id)

    async def get_event(self, name: str, *, timeout: float | None = None) -> Any:
        """The latest value of the run's event `name`; waits for its first value.

        Returns None if `timeout` seconds pass first, or if the run ends without it.

        Examples:
            >>> progress = await handle.get_event("progress", timeout=5)
        """
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        async with self._store() as store:
            while True:
                mark = store.change_mark()
                events = await store.get_events(self.id)
                if name in events:
                    return events[name]
                if Status((await self._row(store)).status).is_terminal:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                poll = self._client.settings.poll_seconds
                await store.wait_for_change(min(poll, remaining), mark)

    async def stream(self, name: str) -> AsyncIterator[Any]:
        """Every value of the run's stream `name`, from the first, then live ones as they come.

        Ends when the stream is closed (`flowz.close_stream`) or the run ends.

        Examples:
            >>> async for token in handle.stream("tokens"):
            ...     print(token, end="")
        """
        async with self._store() as store:
            poll = self._client.settings.poll_seconds
            async for value in follow_stream(store, self.id, name, poll):
                yield value

    async def cancel(self) -> int:
        """Cancel the run and its unfinished subtree; returns how many executions stopped.

        Pending children never start. A running one is stopped within about a second
        (its worker checks every second for work it no longer holds), or at its next
        durable call if that comes first: an async step is cancelled where it awaits
        (its `finally` blocks run); a sync step's thread is abandoned and finishes on
        its own. Whatever a stopped execution would have recorded is dropped.
        """
        async with self._store() as store:
            return await store.cancel_run(self.id)

    async def retry(self) -> None:
        """Resume a failed run: completed steps and children are kept, failed ones run again."""
        async with self._store() as store:
            if not await store.retry_run(self.id):
                status = (await self._row(store)).status
                raise UsageError(f"run {self.id!r} is {status}; only a failed run can be retried")


async def follow_stream(store: Store, run_id: str, name: str, poll: float) -> AsyncIterator[Any]:
    """The values of a run's stream, then live ones, until it is closed or the run ends."""
    after = 0
    while True:
        mark = store.change_mark()
        items = await store.read_stream(run_id, name, after)
        for item in items:
            if item.closed:
                return
            after = item.seq
            yield item.value
        if items:
            continue
        row = await store.get_execution(run_id)
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        if Status(row.status).is_terminal:
            # Values written just before the end commit before it: one last look.
            if not await store.read_stream(run_id, name, after):
                return
            continue
        await store.wait_for_change(poll, mark)


def _loop_key() -> object:
    """The running event loop (asyncio) or run (trio), as anyio names it."""
    return anyio.lowlevel.current_token().native_token
