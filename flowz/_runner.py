"""Starting runs and waiting for them: `flowz.run`, `wf.run`, `wf.start`, `RunHandle`."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import anyio

from ._config import Settings
from ._events import EventBus
from ._registry import default_registry
from ._serde import load_error
from ._types import Kind, Status
from ._worker import Worker
from .errors import (
    NotAWorkflowError,
    RunCancelledError,
    RunNotFoundError,
    StoreError,
    UsageError,
)
from .progress import ProgressView
from .store import open_store
from .store._protocol import ExecutionRow, NewExecution, Store

if TYPE_CHECKING:
    from ._decorators import WorkflowFunction

__all__ = ["RunHandle", "run", "run_async", "start_async"]

R = TypeVar("R")


@dataclass
class _Client:
    """What one event loop keeps for one database: a store, and idle registered workers."""

    store: Store
    #: Workers of earlier wf.run calls, by settings, registered until the loop closes:
    #: registering, reaping and deregistering per call cost more than a small run.
    workers: dict[Settings, Worker] = field(default_factory=dict)


# One client per event loop and database, shared by runs, starts and handles: opening a
# pool and a LISTEN connection per call cost more than the work of a small run.
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], _Client]] = (
    weakref.WeakKeyDictionary()
)
_keepers: set[asyncio.Task[None]] = set()


async def _client_for(settings: Settings) -> _Client:
    """This event loop's client for `settings`; it is closed when the loop closes."""
    loop = asyncio.get_running_loop()
    clients = _clients.setdefault(loop, {})
    key = (settings.database_url, settings.sqlite_synchronous, str(settings.pool_size))
    client = clients.get(key)
    if client is None:
        client = clients[key] = _Client(await open_store(settings))
        # A task that lives as long as the loop: when the loop shuts down (the end of
        # flowz.run, of a test, of asyncio.run), asyncio cancels it and it closes the client.
        keeper = loop.create_task(_close_with_the_loop(client, clients, key))
        _keepers.add(keeper)  # asyncio holds tasks weakly
        keeper.add_done_callback(_keepers.discard)
    return client


async def _client(settings: Settings) -> Store:
    """This event loop's store for `settings`."""
    return (await _client_for(settings)).store


async def _close_with_the_loop(
    client: _Client, clients: dict[tuple[str, ...], _Client], key: tuple[str, ...]
) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        if clients.get(key) is client:
            del clients[key]
        with anyio.CancelScope(shield=True):
            for worker in client.workers.values():
                with contextlib.suppress(StoreError):
                    await worker.close()
            await client.store.aclose()


def _check_workflow(wf: object) -> WorkflowFunction[Any, Any]:
    from ._decorators import WorkflowFunction

    if not isinstance(wf, WorkflowFunction):
        raise NotAWorkflowError(
            f"{wf!r} is not a workflow: decorate the async function with @flowz.workflow"
        )
    return wf


def _outcome(row: ExecutionRow, wf: WorkflowFunction[Any, R]) -> R:
    if row.status == Status.SUCCEEDED:
        return wf.definition.codec.load_result(row.output)  # type: ignore[no-any-return]
    if row.status == Status.CANCELLED:
        raise RunCancelledError(f"run {row.id!r} was cancelled")
    raise load_error(row.error)


async def _create(
    store: Store,
    wf: WorkflowFunction[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    run_id: str | None,
    settings: Settings,
) -> ExecutionRow:
    run_id = run_id or str(uuid.uuid4())
    payload = wf.definition.codec.dump_args(args, kwargs)
    row, created = await store.create_run(
        NewExecution(
            id=run_id,
            root_id=run_id,
            kind=Kind.WORKFLOW.value,
            name=wf.name,
            input=payload,
            queue=settings.queue,
        )
    )
    if not created and (row.name != wf.name or row.parent_id is not None):
        raise UsageError(
            f"the id {run_id!r} already belongs to a run of {row.name}, not of {wf.name}: "
            "choose another id"
        )
    return row


async def _wait_terminal(store: Store, run_id: str, poll: float, deadline: float) -> ExecutionRow:
    while True:
        mark = store.change_mark()
        row = await store.get_execution(run_id)
        if row is None:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        if Status(row.status).is_terminal:
            return row
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"run {run_id!r} is still {row.status}")
        await store.wait_for_change(min(poll, remaining), mark)


async def run_async(
    wf: WorkflowFunction[Any, R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    id: str | None = None,
    settings: Settings | None = None,
    progress: bool | ProgressView | None = None,
) -> R:
    """Create (or find) the run, work on it in this process until it ends, return its result."""
    wf = _check_workflow(wf)
    settings = settings or Settings.from_env()
    client = await _client_for(settings)
    store = client.store
    row = await _create(store, wf, args, kwargs, id, settings)
    if not Status(row.status).is_terminal:
        bus = EventBus()
        view = _view(progress, settings)
        if view is not None:
            view.follow(row.id)
            bus.subscribe(view)
        # This loop's idle worker, or (first call, or runs awaited side by side) a new one.
        worker = client.workers.pop(settings, None)
        if worker is None:
            worker = Worker(store, default_registry(), settings, embedded=True)
            await worker.open()
        worker.bus = bus
        with view or contextlib.nullcontext():
            try:
                row = await _work_until_done(worker, store, row.id, settings)
            except BaseException:
                with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                    await worker.close()
                raise
        if settings in client.workers:  # another call parked one meanwhile: one is enough
            with anyio.CancelScope(shield=True):
                await worker.close()
        else:
            client.workers[settings] = worker
        if view is not None:
            ok = row.status == Status.SUCCEEDED
            detail = repr(_outcome(row, wf)) if ok else _error_line(row)
            view.summary(detail, ok)
    return _outcome(row, wf)


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


def _view(progress: bool | ProgressView | None, settings: Settings) -> ProgressView | None:
    if isinstance(progress, ProgressView):
        return progress
    if progress is None:
        progress = settings.progress
    return ProgressView() if progress else None


def _error_line(row: ExecutionRow) -> str:
    error = row.error or {}
    return f"{error.get('origin_type', 'error')}: {error.get('message', row.status)}"


async def start_async(
    wf: WorkflowFunction[Any, R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    id: str | None = None,
    settings: Settings | None = None,
) -> RunHandle[R]:
    """Create (or find) the run for the workers, and return its handle."""
    wf = _check_workflow(wf)
    settings = settings or Settings.from_env()
    row = await _create(await _client(settings), wf, args, kwargs, id, settings)
    return RunHandle._new(row.id, wf, settings)


def run(
    wf: WorkflowFunction[Any, R],
    /,
    *args: Any,
    id: str | None = None,
    progress: bool | ProgressView | None = None,
    **kwargs: Any,
) -> R:
    """Run a workflow to completion from synchronous code and return its result.

    Uses the database of `FLOWZ_DATABASE_URL` (default `./.flowz/flowz.db`) and a
    worker in this process. With `id=`, a finished run returns its stored result
    and an unfinished one resumes; nothing already journaled runs again. The live
    progress view is drawn on standard error unless `progress=False` (or
    FLOWZ_PROGRESS=0); pass a `flowz.progress.ProgressView` to draw elsewhere.

    Example:
        >>> flowz.run(fan, 1000)
        999000
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(lambda: run_async(wf, args, kwargs, id=id, progress=progress))
    raise UsageError(
        "flowz.run() blocks, and an event loop is already running here (a notebook, or "
        "async code): use `await workflow.run(...)` instead"
    )


@final
class RunHandle(Generic[R]):
    """A workflow run in the database; returned by `wf.start()`."""

    def __init__(self) -> None:
        raise TypeError("RunHandle objects come from wf.start(); they are not built directly")

    @classmethod
    def _new(cls, run_id: str, wf: WorkflowFunction[Any, R], settings: Settings) -> RunHandle[R]:
        handle = cls.__new__(cls)
        handle.id = run_id
        handle._wf = wf
        handle._settings = settings
        return handle

    id: str
    _wf: WorkflowFunction[Any, R]
    _settings: Settings

    def __repr__(self) -> str:
        return f"<RunHandle {self._wf.name} id={self.id!r}>"

    async def _row(self, store: Store) -> ExecutionRow:
        row = await store.get_execution(self.id)
        if row is None:
            raise RunNotFoundError(f"no run with id {self.id!r}")
        return row

    async def status(self) -> Status:
        """The run's current status."""
        return Status((await self._row(await _client(self._settings))).status)

    async def result(self, *, timeout: float | None = None) -> R:
        """Wait for the run to end (a worker must run it); return its result or raise its error."""
        store = await _client(self._settings)
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        row = await _wait_terminal(store, self.id, self._settings.poll_seconds, deadline)
        return _outcome(row, self._wf)

    async def cancel(self) -> int:
        """Cancel the run and its unfinished subtree; returns how many executions stopped.

        Pending children never start; running ones are dropped at their next durable call.
        """
        return await (await _client(self._settings)).cancel_run(self.id)

    async def retry(self) -> None:
        """Resume a failed run: completed steps and children are kept, failed ones run again."""
        store = await _client(self._settings)
        if not await store.retry_run(self.id):
            status = (await self._row(store)).status
            raise UsageError(f"run {self.id!r} is {status}; only a failed run can be retried")
