"""Worker: claims runnable executions and runs them, many at once, with leases and a reaper."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskGroup

from ._config import Settings
from ._engine import execute
from ._events import EventBus
from ._logging import get_logger, log_context
from ._queues import DEFAULT_QUEUE, Queue, Schedule
from ._registry import Definition, Registry
from ._serde import dump_error
from ._types import TERMINAL_STATUSES, Kind
from ._waiting import live_workers
from .errors import StoreError, StoreNotWritableError
from .store._protocol import (
    Claim,
    Fence,
    LeaseLost,
    NewExecution,
    QueueLimits,
    ScheduleRow,
    Store,
)

__all__ = ["PRUNE_BATCH", "Worker", "queue_limits", "serve"]

log = get_logger("flowz.worker")

_CLAIM_BATCH = 100
# How often a worker looks for workers of its host whose process is gone.
_NEIGHBOUR_SECONDS = 1.0
# While busy, wait up to this long for a quarter of the slots to free before claiming.
_CLAIM_GATHER_SECONDS = 0.01
#: Runs deleted per prune transaction: small enough that workers never wait long on it.
PRUNE_BATCH = 100
#: With FLOWZ_RETENTION, how often a worker looks for runs to delete when none were left.
_PRUNE_SECONDS = 60.0
#: How often a worker looks for pending work no live worker knows, and how much it names.
_UNKNOWN_SECONDS = 60.0
_UNKNOWN_SHOWN = 20
_UNKNOWN_REMEMBERED = 10_000


#: A tick handled at most this late was not missed (catch_up="none"): workers look for due
#: ticks at every turn of their claim loop, so a later one came due while none was up.
_TICK_GRACE_SECONDS = 10.0
#: At most this many missed ticks run after downtime with catch_up="all".
_MAX_CATCH_UP = 1000


def queue_limits(queue: Queue) -> QueueLimits:
    """The stored form of a queue's limits."""
    return QueueLimits(
        queue.name,
        queue.concurrency,
        queue.per_worker,
        None if queue.rate is None else queue.rate.limit,
        None if queue.rate is None else float(queue.rate.per),
        queue.per_partition,
    )


def _due_ticks(schedule: Schedule, last: float, now: float) -> tuple[list[dt.datetime], float]:
    """The ticks after `last` up to `now` (at most a bit over the catch-up cap), and the next."""
    due: list[dt.datetime] = []
    ticks = schedule.ticks(dt.datetime.fromtimestamp(last, dt.UTC))
    for tick in ticks:
        if tick.timestamp() > now:
            return due, tick.timestamp()
        due.append(tick)
        if len(due) > 10 * _MAX_CATCH_UP:
            due = due[-_MAX_CATCH_UP - 1 :]  # years of missed ticks: keep the newest
    return due, math.inf


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


class Worker:
    """Runs executions from one queue of one store until stopped.

    Examples:
        >>> worker = Worker(store, default_registry(), Settings.from_env())  # doctest: +SKIP
        >>> await worker.run()  # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store,
        registry: Registry,
        settings: Settings,
        bus: EventBus | None = None,
        *,
        embedded: bool = False,
    ) -> None:
        self.store = store
        # Inside flowz.run / wf.run a database that refuses writes ends the call with its
        # error; a `flowz worker` process logs it and keeps trying until space is freed.
        self.embedded = embedded
        self._unwritable: StoreNotWritableError | None = None
        self.bus = bus or EventBus()
        self.registry = registry
        self.settings = settings
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.host = socket.gethostname()
        self._running = 0
        # Running executions by id: (claim token, cancel scope), to stop work this worker lost.
        self._scopes: dict[str, tuple[str, anyio.CancelScope]] = {}
        self._claim_threshold = max(1, min(settings.concurrency // 4, _CLAIM_BATCH))
        self._slot_freed = anyio.Event()
        self._stopping = False
        # The claim loop's current idle wait, cut short by stop(); a database call in
        # flight is never cancelled by a stop (that would cost the pool its connection).
        self._idle: anyio.CancelScope | None = None
        self._reaped_at = -math.inf
        # When a heartbeat last renewed this worker's leases (monotonic).
        self._renewed_at = time.monotonic()
        self._registered: list[str] = []
        self._prune_at = -math.inf
        self._unknown_at = -math.inf
        self._warned: set[str] = set()
        # Running executions per queue, for per_worker limits.
        self._by_queue: dict[str, int] = {}
        self._next_tick = -math.inf
        self._rate_wait: float | None = None
        # Queues whose last claim took less than it asked (their limits, or no work).
        self._limited: set[str] = set()
        # What the worker registered, read once there instead of at every claim.
        self._served: list[str] = []
        self._declared: dict[str, Queue] = {}
        self._schedules: list[tuple[Definition, Schedule]] = []

    @property
    def stopping(self) -> bool:
        """Whether stop() was called."""
        return self._stopping

    def stop(self) -> None:
        """Stop taking work.

        `work()` then lets running executions finish within the grace period, releases
        the rest, and returns.
        """
        self._stopping = True
        if self._idle is not None:
            self._idle.cancel()

    async def run(self) -> None:
        """Register, claim and run executions until `stop()` or cancellation, deregister."""
        try:
            await self.open()
            await self.work()
        finally:
            await self.close()

    async def open(self) -> None:
        """Register this worker, and put back the work of dead ones."""
        await self._register()
        await self.reap()

    @property
    def queues(self) -> list[str]:
        """The queues it claims from: FLOWZ_QUEUE's alone, else default and those named."""
        if self.settings.queue != DEFAULT_QUEUE:
            return [self.settings.queue]
        return [DEFAULT_QUEUE, *(q.name for q in self.registry.queues() if q.name != DEFAULT_QUEUE)]

    async def _register(self) -> None:
        """Record this worker, its queues and names; store its queues and schedules."""
        self._registered = self.registry.known()
        self._served = self.queues
        self._declared = {q.name: q for q in self.registry.queues()}
        # Workers of `flowz worker` tick; one inside client.run() works on its run only.
        self._schedules = [] if self.embedded else self.registry.schedules()
        if self._declared:
            await self.store.define_queues([queue_limits(q) for q in self._declared.values()])
        if self._schedules:
            await self.store.define_schedules(
                [ScheduleRow(d.name, s.cron, s.timezone, s.catch_up) for d, s in self._schedules]
            )
            self._next_tick = -math.inf
        await self.store.register_worker(
            self.id, self.host, os.getpid(), ",".join(self._served), self._registered
        )

    async def close(self) -> None:
        """Deregister this worker; anything it still holds goes back to pending."""
        with anyio.CancelScope(shield=True):
            try:
                await self.store.deregister_worker(self.id)
            except StoreError:
                if self._unwritable is None:
                    raise
                # Left behind: reaped once this process is gone or its leases expire.

    async def work(self) -> None:
        """Claim and run executions until `stop()`; call `open()` first.

        A stop() that comes before work() starts ends it at once. Each stop ends one
        work(): the worker can work again after it.
        """
        self._unwritable = None
        if self.registry.known() != self._registered:  # a reused worker, new definitions
            await self._register()
        if time.monotonic() - self._reaped_at >= self.settings.lease_seconds / 3:
            await self.reap()  # a reused worker: as often as a working one would
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._maintain)
                await self._claim_loop(tg)
                # Stopping: let in-flight executions finish within the grace period; the
                # rest are cancelled and released (put back as pending) by _run_one.
                with anyio.move_on_after(self.settings.shutdown_grace_seconds):
                    while self._running > 0:
                        await self._slot_freed.wait()
                if self._running and not self.embedded:
                    log.info(
                        "flowz worker %s: %d execution(s) still running after %g s: put back "
                        "as pending, another worker resumes them from their journal",
                        self.id,
                        self._running,
                        self.settings.shutdown_grace_seconds,
                    )
                tg.cancel_scope.cancel()
        finally:
            self._stopping = False
        if self._unwritable is not None:
            raise self._unwritable

    def _store_failed(self, exc: StoreError) -> None:
        if self.embedded and isinstance(exc, StoreNotWritableError):
            self._unwritable = self._unwritable or exc
            self.stop()

    async def _idle_wait(self, wait: Callable[[], Awaitable[object]]) -> None:
        """Await `wait()` unless stop() comes first."""
        if self.stopping:
            return
        try:
            with anyio.CancelScope() as self._idle:
                await wait()
        finally:
            self._idle = None

    async def _claim_loop(self, tg: TaskGroup) -> None:
        settings = self.settings
        while not self.stopping:
            free = settings.concurrency - self._running
            if free <= 0:
                await self._idle_wait(self._slot_freed.wait)
                continue
            if free < self._claim_threshold <= settings.concurrency - 1:
                # Busy: let a few more slots free up so one claim takes a batch, not a row.
                with anyio.move_on_after(_CLAIM_GATHER_SECONDS):
                    while settings.concurrency - self._running < self._claim_threshold:
                        await self._slot_freed.wait()
                free = settings.concurrency - self._running
            names = self.registry.names()
            try:
                mark = self.store.change_mark()  # a change after this wakes the wait below
                await self._tick_schedules()
                claims = await self._claim(names, min(free, _CLAIM_BATCH))
            except StoreError as exc:
                self._store_failed(exc)
                log.warning("flowz worker %s cannot claim work (%s); retrying", self.id, exc)
                await self._idle_wait(functools.partial(anyio.sleep, settings.poll_seconds))
                continue
            for claim in claims:
                self._running += 1
                queue = claim.execution.queue
                self._by_queue[queue] = self._by_queue.get(queue, 0) + 1
                tg.start_soon(self._run_one, claim)
            if claims:
                await anyio.sleep(0)  # let the new tasks start before claiming again
                continue
            due_in = self._rate_wait
            for queue in self._served:
                try:
                    due = await self.store.next_due_in(names, queue, also=self._tick_due())
                except StoreError:
                    due = None
                if due is not None and due <= 0 and queue in self._limited:
                    continue  # due but held back by the queue's limits: a finish wakes us
                if due is not None:
                    due_in = due if due_in is None else min(due_in, due)
            timeout = settings.poll_seconds
            if due_in is not None:
                timeout = min(timeout, due_in)
            if timeout > 0:
                try:
                    await self._idle_wait(
                        functools.partial(self.store.wait_for_change, timeout, mark)
                    )
                except StoreError:  # SQLite reads to see other processes' commits
                    await self._idle_wait(functools.partial(anyio.sleep, timeout))
            else:
                await anyio.sleep(0)  # due now: look again, but let other tasks run first

    async def _claim(self, names: list[str], free: int) -> list[Claim]:
        """Claim up to `free` executions from this worker's queues, within their limits.

        The default queue (unless it has limits) is one statement; a queue with limits
        is claimed in a transaction that counts them in the database.
        """
        claims: list[Claim] = []
        self._rate_wait = None
        self._limited.clear()
        for queue in self._served:
            wanted = free - len(claims)
            definition = self._declared.get(queue)
            if definition is not None and definition.per_worker is not None:
                wanted = min(wanted, definition.per_worker - self._by_queue.get(queue, 0))
            if wanted <= 0:
                self._limited.add(queue)  # this worker's share is taken: a finish wakes it
                continue
            lease = self.settings.lease_seconds
            if queue == DEFAULT_QUEUE and (definition is None or not definition.limited):
                claims += await self.store.claim(self.id, names, queue, wanted, lease)
                continue
            # Any other queue's limits are read from the database: another deploy may set them.
            taken, wait = await self.store.claim_limited(self.id, names, queue, wanted, lease)
            claims += taken
            if len(taken) < wanted:
                self._limited.add(queue)
            if wait is not None:
                self._rate_wait = wait if self._rate_wait is None else min(self._rate_wait, wait)
        return claims

    def _tick_due(self) -> float | None:
        return None if math.isinf(self._next_tick) else self._next_tick

    async def _tick_schedules(self) -> None:
        """Start the runs of schedule ticks that came due, each exactly once fleet-wide.

        A run's id is the schedule and the tick, and a tick is handled in a transaction
        that checks no worker handled it: racing workers make one run.
        """
        schedules = self._schedules
        if not schedules:
            return
        now = self.store.wall_now()
        if now < self._next_tick:
            return
        stored = {row.name: row for row in await self.store.list_schedules()}
        next_tick = math.inf
        for definition, schedule in schedules:
            row = stored.get(definition.name)
            if row is None:
                continue
            if row.last_tick is None:  # a new schedule: its ticks count from now
                await self.store.tick_schedule(definition.name, now, None)
                last = now
            else:
                last = row.last_tick
            due, upcoming = _due_ticks(schedule, last, now)
            next_tick = min(next_tick, upcoming)
            if not due:
                continue
            run = due if not row.paused else []
            if schedule.catch_up == "latest":
                run = run[-1:]
            elif schedule.catch_up == "none":
                run = [t for t in run if now - t.timestamp() <= _TICK_GRACE_SECONDS]
            elif len(due) > _MAX_CATCH_UP:
                log.warning(
                    "flowz: schedule %s missed %d ticks; catch_up='all' runs the last %d",
                    definition.name, len(due), _MAX_CATCH_UP,
                )  # fmt: skip
                run = run[-_MAX_CATCH_UP:]
            for tick in run:
                await self.store.tick_schedule(
                    definition.name, tick.timestamp(), self._scheduled_run(definition, tick)
                )
            # The ticks not run are passed over (paused, or not caught up).
            await self.store.tick_schedule(definition.name, due[-1].timestamp(), None)
        self._next_tick = next_tick

    def _scheduled_run(self, definition: Definition, tick: dt.datetime) -> NewExecution:
        run_id = f"{definition.name}@{tick.isoformat()}"
        queue = definition.options.queue
        timeout = definition.options.timeout
        return NewExecution(
            id=run_id,
            root_id=run_id,
            kind="workflow",
            name=definition.name,
            input=definition.codec.dump_args((tick,), {}),
            queue=self.settings.queue if queue is None else queue.name,
            deadline=None if timeout is None else tick.timestamp() + timeout,
        )

    async def _run_one(self, claim: Claim) -> None:
        row = claim.execution
        step = row.name if row.kind == Kind.STEP else None
        with log_context(row.root_id, row.id, step):
            await self._run_claimed(claim)

    async def _run_claimed(self, claim: Claim) -> None:
        scope = anyio.CancelScope()
        self._scopes[claim.execution.id] = (claim.fence.token, scope)
        try:
            with scope:
                await execute(self.store, self.registry.get(claim.execution.name), claim, self.bus)
            if scope.cancelled_caught:
                await self._lost(claim)
        except LeaseLost:
            await self._lost(claim)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self.store.release(claim.fence)
            raise
        except StoreError as exc:
            # The database failed (restart, network, full disk): give the work back for a
            # later try.
            self._store_failed(exc)
            log.error("flowz could not record progress of %s: %s", claim.execution.id, exc)
            await self._give_back(claim.fence)
        except Exception as exc:
            # A bug, not a passing fault: fail the execution visibly instead of looping on it.
            log.exception("flowz failed while running %s", claim.execution.id)
            with anyio.CancelScope(shield=True), contextlib.suppress(LeaseLost):
                try:
                    await self.store.finish(claim.fence, "failed", None, dump_error(exc))
                except StoreError:
                    await self._give_back(claim.fence)
        finally:
            if self._scopes.get(claim.execution.id, ("", None))[0] == claim.fence.token:
                del self._scopes[claim.execution.id]
            self._running -= 1
            self._by_queue[claim.execution.queue] -= 1
            self._slot_freed.set()
            self._slot_freed = anyio.Event()

    async def _lost(self, claim: Claim) -> None:
        """Log why this worker stopped an execution it no longer holds.

        Cancelled is expected; a lease that lapsed (the database was out of reach) or a
        takeover by another worker (this one stalled past its lease) is a warning.
        """
        lease = self.settings.lease_seconds
        # Its lease ran from the later of the claim and the last heartbeat that got through.
        unrenewed = min(time.monotonic() - self._renewed_at, claim.now() - claim.db_now)
        if unrenewed > lease:
            log.warning(
                "%s: this worker lost its lease (no heartbeat reached the database for %.0f s, "
                "longer than the %g s lease) and another worker may have taken it over: its "
                "outcome here is dropped",
                claim.execution.id,
                unrenewed,
                lease,
            )
            return
        with anyio.CancelScope(shield=True):
            try:
                row = await self.store.get_execution(claim.execution.id)
            except StoreError:
                row = None
        if row is not None and row.lease_owner not in (None, self.id):
            log.warning(
                "%s was taken over by worker %s (this one held it past its lease): its "
                "outcome here is dropped",
                claim.execution.id,
                row.lease_owner,
            )
        else:  # cancelled, or it suspended or ended just before this write
            status = "gone" if row is None else row.status
            log.info("%s is no longer this worker's (%s): stopped it", claim.execution.id, status)

    async def _give_back(self, fence: Fence) -> None:
        """Release an execution this worker stopped running.

        If the store fails even here, the heartbeat no longer renews the execution's
        lease (it is not running): the lease lapses and a reaper puts it back.
        """
        with anyio.CancelScope(shield=True), contextlib.suppress(StoreError, LeaseLost):
            await self.store.release(fence)

    async def _maintain(self) -> None:
        """Every third of a lease: renew leases, stop lost work, reap dead workers' work.

        Lost work is what this worker runs but no longer holds: a cancelled run, or a
        lease that expired and was taken over. Every second in between, it stops lost
        work (one read), looks for a worker of this host whose process is gone, and
        puts that one's work back at once, and makes runs past their deadline runnable
        (a read; a write only when there is one), so that a worker fails them.
        """
        interval = self.settings.lease_seconds / 3
        tick = min(_NEIGHBOUR_SECONDS, interval)
        beat_at = time.monotonic() + interval
        while True:
            await anyio.sleep(tick)
            if time.monotonic() < beat_at:
                try:
                    await self._stop_lost()
                    await self._reap_dead_neighbours()
                    await self.store.expire()  # runs past their deadline fail within ~1 s
                except Exception:
                    log.exception("flowz worker %s: looking for lost work failed", self.id)
                continue
            beat_at = time.monotonic() + interval
            try:
                running = dict(self._scopes)
                held = await self.store.heartbeat(
                    self.id, self.settings.lease_seconds, list(running)
                )
                self._renewed_at = time.monotonic()
                self._stop(running, set(running) - held)
                await self.reap()
                await self._prune()
                await self._warn_unknown()
            except Exception:
                log.exception("flowz worker %s: heartbeat failed; retrying", self.id)

    async def _prune(self) -> None:
        """With FLOWZ_RETENTION, delete one batch of runs that ended longer ago than it.

        One batch per heartbeat while there is a backlog, else one look a minute: the
        deleting never holds the database long, and workers share it.
        """
        retention = self.settings.retention_seconds
        if retention is None or self.embedded or time.monotonic() < self._prune_at:
            return
        deleted = await self.store.prune(time.time() - retention, TERMINAL_STATUSES, PRUNE_BATCH)
        if deleted:
            log.info("flowz worker %s deleted %d run(s) past FLOWZ_RETENTION", self.id, deleted)
        self._prune_at = -math.inf if deleted == PRUNE_BATCH else time.monotonic() + _PRUNE_SECONDS

    async def _warn_unknown(self) -> None:
        """Say which runs wait for a function no live worker knows.

        It looks every two leases (a minute at most). Each such execution is logged
        once per worker, after it waited a lease.
        """
        if self.embedded or time.monotonic() < self._unknown_at:
            return
        lease = self.settings.lease_seconds
        self._unknown_at = time.monotonic() + min(_UNKNOWN_SECONDS, 2 * lease)
        known = sorted({n for w in await live_workers(self.store, lease) for n in w.names})
        waiting = await self.store.pending_unknown(known, time.time() - lease, _UNKNOWN_SHOWN)
        if len(self._warned) > _UNKNOWN_REMEMBERED:
            self._warned.clear()
        for row in waiting:
            if row.id in self._warned:
                continue
            self._warned.add(row.id)
            with log_context(row.root_id, row.id):
                log.warning(
                    "%s has been pending for %.0f s and no live worker knows %s: start a "
                    "worker that imports its module (flowz worker MODULE)",
                    row.id,
                    time.time() - row.created_at,
                    row.name,
                )

    async def _stop_lost(self) -> None:
        """Stop running what this worker no longer holds (a cancel takes effect in ~1 s)."""
        running = dict(self._scopes)
        if running:
            self._stop(running, await self.store.lost(self.id, list(running)))

    def _stop(self, running: dict[str, tuple[str, anyio.CancelScope]], lost: set[str]) -> None:
        for execution_id in lost:
            entry = running[execution_id]
            if self._scopes.get(execution_id) == entry:  # not since re-claimed by this worker
                entry[1].cancel()

    async def reap(self, dead: list[str] | None = None) -> int:
        """Put back executions whose lease expired or whose worker on this host died.

        `dead`: the workers of this host already found dead (else they are looked up).
        """
        if dead is None:
            dead = await self._dead_neighbours()
        reaped = await self.store.reap(dead)
        self._reaped_at = time.monotonic()
        if reaped:
            log.info(
                "flowz worker %s put back %d execution(s) as pending: their lease expired%s",
                self.id,
                reaped,
                f" or their worker died ({', '.join(dead)})" if dead else "",
            )
        return reaped

    async def _dead_neighbours(self) -> list[str]:
        """Workers registered on this host whose process is gone."""
        return [
            w.id
            for w in await self.store.list_workers(self.host)
            if w.id != self.id and not _pid_alive(w.pid)
        ]

    async def _reap_dead_neighbours(self) -> None:
        """One cheap read a second; a reap only when a process of this host died."""
        dead = await self._dead_neighbours()
        if dead:
            await self.reap(dead)


async def serve(store: Store, registry: Registry, settings: Settings) -> None:
    """Run a worker until SIGINT or SIGTERM, then stop gracefully; a second signal cancels."""
    import signal

    worker = Worker(store, registry, settings)
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    if worker.stopping:
                        log.warning(
                            "second %s: cancelling running work", signal.Signals(signum).name
                        )
                        tg.cancel_scope.cancel()
                        return
                    log.info(
                        "%s: finishing running work (up to %g s), then stopping",
                        signal.Signals(signum).name,
                        settings.shutdown_grace_seconds,
                    )
                    worker.stop()

        tg.start_soon(watch_signals)
        log.info(
            "flowz worker %s: %d functions, queues %s, concurrency %d",
            worker.id,
            len(registry.names()),
            ", ".join(worker.queues),
            settings.concurrency,
        )
        await worker.run()
        tg.cancel_scope.cancel()
