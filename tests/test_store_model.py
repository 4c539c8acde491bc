"""Model-based tests of the Store protocol, against both stores.

Hypothesis drives random sequences of what workers, clients and the engine ask of a
store: create, claim (by several workers, from a plain and a limited queue), heartbeat,
journal, schedule and wait on children (all or first), finish, suspend, retry later,
release, cancel, retry a run, messages, a worker dying, a lease lapsing and the reaper,
and writes with fences that are no longer valid. A small in-memory model says what each
should do; after every step the store must agree with it, and hold the invariants no
model is needed for: a running execution has one owner and a lease, a waiting one waits
on something that can still happen, a queue is never past its limit. At the end every
run must be driven to an end: nothing is lost.

CI runs a modest number of examples; `pytest tests/test_store_model.py
--hypothesis-profile long` runs thousands (the profile is registered in conftest.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from flowz import Settings
from flowz.errors import RunEndedError, RunNotFoundError
from flowz.store import SqliteStore, Store, open_store
from flowz.store._protocol import Fence, JournalEntry, LeaseLost, NewExecution, QueueLimits
from tests.test_store_contract import execute_sql

T = TypeVar("T")

NAMES = ["wf", "step"]
WORKERS = ["w1", "w2", "w3"]
ROOTS = ["r0", "r1", "r2", "r3"]
#: Runs of the queue "limited", claimed only through claim_limited.
LIMITED_ROOTS = ["q0", "q1", "q2"]
LIMITED_CONCURRENCY = 2
TOPICS = ["a", "b"]
TERMINAL = {"succeeded", "failed", "cancelled"}
LEASE = 3600.0
TABLES = [
    "flowz_journal",
    "flowz_messages",
    "flowz_events",
    "flowz_streams",
    "flowz_queue_starts",
    "flowz_queues",
    "flowz_schedules",
    "flowz_workers",
    "flowz_executions",
]
ERROR = {"type": "model:Boom", "message": "boom"}


@dataclass
class Ex:
    """What the model knows of one execution."""

    id: str
    root: str
    parent: str | None
    kind: str
    queue: str
    status: str = "pending"
    due: bool = True
    holder: str | None = None
    token: str | None = None
    attempt: int = 0
    next_position: int = 0
    #: position -> the ids of the children scheduled there.
    children: dict[int, list[str]] = field(default_factory=dict)
    #: position -> journal status.
    journal: dict[int, str] = field(default_factory=dict)
    #: While waiting on children: whom, and whether the first end wakes it.
    waited: frozenset[str] = frozenset()
    wait_first: bool = False
    #: The last wait (position, child positions, first): what a replay repeats.
    last_wait: tuple[int, tuple[int, ...], bool] | None = None
    #: A receive that suspended: (position, topic), until it is taken.
    receiving: tuple[int, str] | None = None
    #: (position) -> the message value a receive took there.
    received: dict[int, Any] = field(default_factory=dict)

    @property
    def fence(self) -> Fence:
        assert self.token is not None
        return Fence(self.id, self.token)


def pick(items: list[T], index: int) -> T:
    return items[index % len(items)]


class StoreModel(RuleBasedStateMachine):
    """One store, and the model of what it holds. `store` and `loop` are set per test."""

    store: Store
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.ex: dict[str, Ex] = {}
        #: Fences that were valid once and are not any more.
        self.stale: list[Fence] = []
        #: (execution id, topic) -> unread message values, oldest first.
        self.inbox: dict[tuple[str, str], list[int]] = {}
        self.keys: set[tuple[str, str]] = set()
        self.values = itertools.count()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    @initialize()
    def empty_store(self) -> None:
        for table in TABLES:
            self.run(execute_sql(self.store, f"DELETE FROM {table}"))
        self.run(
            self.store.define_queues([QueueLimits("limited", concurrency=LIMITED_CONCURRENCY)])
        )

    # -- model helpers -------------------------------------------------------
    def where(self, test: Callable[[Ex], bool]) -> list[Ex]:
        return [e for e in self.ex.values() if test(e)]

    def running(self, kind: str | None = None) -> list[Ex]:
        return self.where(lambda e: e.status == "running" and kind in (None, e.kind))

    def acting_workflows(self) -> list[Ex]:
        """Running workflows free to do anything (a taken-up receive must be repeated first)."""
        return self.where(
            lambda e: e.status == "running" and e.kind == "workflow" and e.receiving is None
        )

    def drop_lease(self, e: Ex, status: str) -> None:
        if e.token is not None:
            self.stale.append(e.fence)
        e.status, e.holder, e.token = status, None, None

    def claimable(self, queue: str) -> list[Ex]:
        return self.where(lambda e: e.status == "pending" and e.due and e.queue == queue)

    def tree(self, root: str) -> list[Ex]:
        return self.where(lambda e: e.root == root)

    def descendants(self, e: Ex) -> Iterator[Ex]:
        for ids in e.children.values():
            for child_id in ids:
                child = self.ex[child_id]
                yield child
                yield from self.descendants(child)

    def take_claims(self, worker: str, claims: list[Any], candidates: list[Ex]) -> None:
        ids = [c.execution.id for c in claims]
        assert len(set(ids)) == len(ids)
        allowed = {e.id for e in candidates}
        assert set(ids) <= allowed, f"claimed what was not claimable: {set(ids) - allowed}"
        for claim in claims:
            e = self.ex[claim.execution.id]
            e.status, e.holder, e.token = "running", worker, claim.fence.token
            e.attempt = max(e.attempt, 1)

    def ended(self, e: Ex, status: str) -> None:
        """`e` finished: its descendants are cancelled (a workflow), its parent may wake."""
        self.drop_lease(e, status)
        if e.kind == "workflow":
            for d in self.descendants(e):
                if d.status not in TERMINAL:
                    self.drop_lease(d, "cancelled")
                    d.waited = frozenset()
        if e.parent is None:
            return
        parent = self.ex[e.parent]
        if parent.status != "waiting" or e.id not in parent.waited:
            return
        if (
            status != "succeeded"
            or parent.wait_first
            or all(self.ex[c].status in TERMINAL for c in parent.waited)
        ):
            parent.status, parent.due, parent.waited = "pending", True, frozenset()

    def new_children(self, parent: Ex, position: int, width: int, kind: str) -> list[NewExecution]:
        ids = [f"{parent.id}/{position}/{i}" for i in range(width)]
        parent.children[position] = ids
        for child_id in ids:
            self.ex[child_id] = Ex(child_id, parent.root, parent.id, kind, "default")
        return [
            NewExecution(
                id=child_id,
                root_id=parent.root,
                kind=kind,
                name="wf" if kind == "workflow" else "step",
                input={"i": i},
                max_attempts=3,
                parent_id=parent.id,
                position=position,
                child_index=i,
            )
            for i, child_id in enumerate(ids)
        ]

    def wait(
        self, e: Ex, wait_position: int, positions: tuple[int, ...], first: bool, **new: Any
    ) -> None:
        suspended = self.run(
            self.store.wait_for_children(e.fence, wait_position, positions, first=first, **new)
        )
        children = [self.ex[c] for p in positions for c in e.children[p]]
        unfinished = frozenset(c.id for c in children if c.status not in TERMINAL)
        if first:
            expected = len(unfinished) == len(children) and bool(children)
        else:
            expected = bool(unfinished)
        assert suspended == expected, f"wait of {e.id} on {positions}: {suspended}"
        e.last_wait = (wait_position, positions, first)
        if suspended:
            self.drop_lease(e, "waiting")
            e.waited, e.wait_first = unfinished, first

    # -- runs -----------------------------------------------------------------
    @rule(index=st.integers(0, 100), limited=st.booleans())
    def create_run(self, index: int, limited: bool) -> None:
        run_id = pick(LIMITED_ROOTS if limited else ROOTS, index)
        queue = "limited" if limited else "default"
        new = NewExecution(
            id=run_id, root_id=run_id, kind="workflow", name="wf", input={"n": index}, queue=queue
        )
        row, created = self.run(self.store.create_run(new))
        assert created == (run_id not in self.ex)
        if created:
            self.ex[run_id] = Ex(run_id, run_id, None, "workflow", queue)
        assert row.id == run_id

    @precondition(lambda self: self.ex)
    @rule(index=st.integers(0, 100))
    def cancel_run(self, index: int) -> None:
        root = pick(self.where(lambda e: e.parent is None), index)
        cancelled = self.run(self.store.cancel_run(root.id))
        unfinished = [e for e in self.tree(root.id) if e.status not in TERMINAL]
        assert cancelled == len(unfinished)
        for e in unfinished:
            self.drop_lease(e, "cancelled")
            e.waited = frozenset()

    @precondition(lambda self: self.ex)
    @rule(index=st.integers(0, 100))
    def retry_run(self, index: int) -> None:
        root = pick(self.where(lambda e: e.parent is None), index)
        retried = self.run(self.store.retry_run(root.id))
        assert retried == (root.status == "failed")
        if not retried:
            return
        for e in self.tree(root.id):
            if e.status in ("failed", "cancelled"):
                # A receive that suspended stays in the journal: the replay repeats it.
                e.status, e.due, e.attempt, e.waited = "pending", True, 0, frozenset()
                e.journal = {p: s for p, s in e.journal.items() if s not in ("failed", "retrying")}

    # -- workers --------------------------------------------------------------
    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 3))
    def claim(self, worker: str, limit: int) -> None:
        candidates = self.claimable("default")
        claims = self.run(self.store.claim(worker, NAMES, "default", limit, LEASE))
        assert len(claims) == min(limit, len(candidates))
        self.take_claims(worker, claims, candidates)

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 3))
    def claim_limited(self, worker: str, limit: int) -> None:
        candidates = self.claimable("limited")
        room = LIMITED_CONCURRENCY - len(
            self.where(lambda e: e.queue == "limited" and e.status == "running")
        )
        claims, _ = self.run(self.store.claim_limited(worker, NAMES, "limited", limit, LEASE))
        assert len(claims) == min(limit, len(candidates), room)
        self.take_claims(worker, claims, candidates)

    @rule(worker=st.sampled_from(WORKERS), with_lost=st.booleans())
    def heartbeat(self, worker: str, with_lost: bool) -> None:
        mine = {e.id for e in self.running() if e.holder == worker}
        # A worker may still think it runs what it lost: the heartbeat must not renew it.
        lost = {e.id for e in self.ex.values() if e.holder != worker} if with_lost else set()
        held = self.run(self.store.heartbeat(worker, LEASE, sorted(mine | lost)))
        assert held == mine

    @rule(worker=st.sampled_from(WORKERS))
    def worker_dies_and_is_reaped(self, worker: str) -> None:
        mine = [e for e in self.running() if e.holder == worker]
        assert self.run(self.store.reap([worker])) == len(mine)
        for e in mine:
            self.drop_lease(e, "pending")
            e.due = True

    @precondition(lambda self: self.running())
    @rule(index=st.integers(0, 100))
    def lease_lapses_and_is_reaped(self, index: int) -> None:
        e = pick(self.running(), index)
        self.run(
            execute_sql(
                self.store, f"UPDATE flowz_executions SET lease_expires_at = 0 WHERE id = '{e.id}'"
            )
        )
        assert self.run(self.store.reap([])) == 1
        self.drop_lease(e, "pending")
        e.due = True

    @precondition(lambda self: self.where(lambda e: e.status == "pending" and not e.due))
    @rule()
    def time_passes(self) -> None:
        self.run(
            execute_sql(
                self.store,
                "UPDATE flowz_executions SET run_at = run_at - 7200 WHERE status = 'pending'",
            )
        )
        for e in self.where(lambda e: e.status == "pending"):
            e.due = True

    # -- the engine's side ----------------------------------------------------------
    @precondition(lambda self: self.acting_workflows())
    @rule(index=st.integers(0, 100), status=st.sampled_from(["succeeded", "failed", "retrying"]))
    def journal_a_step(self, index: int, status: str) -> None:
        e = pick(self.acting_workflows(), index)
        position = e.next_position
        e.next_position += 1
        entry = JournalEntry(position, "step", "s", status, output=position)
        self.run(self.store.append_journal(e.fence, entry))
        e.journal[position] = status

    @precondition(lambda self: self.acting_workflows())
    @rule(
        index=st.integers(0, 100),
        width=st.integers(1, 3),
        workflows=st.booleans(),
        first=st.booleans(),
        wait=st.booleans(),
    )
    def schedule_children(
        self, index: int, width: int, workflows: bool, first: bool, wait: bool
    ) -> None:
        e = pick(self.acting_workflows(), index)
        # Two levels of workflows at most: a child workflow starts steps.
        kind = "workflow" if workflows and e.parent is None else "step"
        position = e.next_position
        e.next_position += 1
        entry = JournalEntry(position, "gather", kind, "scheduled", output={"width": width})
        children = self.new_children(e, position, width, kind)
        e.journal[position] = "scheduled"
        if not wait:
            self.run(self.store.schedule_children(e.fence, [entry], children))
            return
        wait_position = e.next_position
        e.next_position += 1
        self.wait(e, wait_position, (position,), first, entries=[entry], children=children)

    @precondition(lambda self: [e for e in self.acting_workflows() if e.children])
    @rule(index=st.integers(0, 100), first=st.booleans(), replay=st.booleans())
    def wait_on_scheduled(self, index: int, first: bool, replay: bool) -> None:
        e = pick([e for e in self.acting_workflows() if e.children], index)
        if replay and e.last_wait is not None:
            # What a replay does after a wake: the same wait at the same position.
            self.wait(e, *e.last_wait)
            return
        positions = tuple(sorted(e.children))
        wait_position = e.next_position
        e.next_position += 1
        self.wait(e, wait_position, positions, first)

    def finishable(self) -> list[Ex]:
        return self.acting_workflows() + self.running("step")

    @precondition(lambda self: self.finishable())
    @rule(index=st.integers(0, 100), ok=st.booleans())
    def finish(self, index: int, ok: bool) -> None:
        e = pick(self.finishable(), index)
        status = "succeeded" if ok else "failed"
        self.run(self.store.finish(e.fence, status, e.id if ok else None, None if ok else ERROR))
        self.ended(e, status)

    @precondition(lambda self: self.acting_workflows() + self.running("step"))
    @rule(index=st.integers(0, 100), due=st.booleans(), how=st.sampled_from(["sleep", "release"]))
    def give_back(self, index: int, due: bool, how: str) -> None:
        e = pick(self.acting_workflows() + self.running("step"), index)
        if how == "release":
            self.run(self.store.release(e.fence))
            due = True
        else:
            run_at = self.store.wall_now() + (-1 if due else 3600)
            self.run(self.store.suspend_until(e.fence, run_at, None))
        self.drop_lease(e, "pending")
        e.due = due

    @precondition(lambda self: self.running("step"))
    @rule(index=st.integers(0, 100), due=st.booleans())
    def retry_later(self, index: int, due: bool) -> None:
        e = pick(self.running("step"), index)
        run_at = self.store.wall_now() + (-1 if due else 3600)
        self.run(self.store.retry_later(e.fence, run_at, ERROR))
        self.drop_lease(e, "pending")
        e.due, e.attempt = due, e.attempt + 1

    # -- messages ------------------------------------------------------------
    @precondition(lambda self: self.where(lambda e: e.kind == "workflow"))
    @rule(
        index=st.integers(0, 100), topic=st.sampled_from(TOPICS), key=st.sampled_from([None, "k"])
    )
    def send(self, index: int, topic: str, key: str | None) -> None:
        e = pick(self.where(lambda e: e.kind == "workflow"), index)
        value = next(self.values)
        if key is not None and (e.id, key) in self.keys:
            assert not self.run(self.store.send_message(e.id, topic, value, key))
            return
        if e.status in TERMINAL:
            with pytest.raises(RunEndedError):
                self.run(self.store.send_message(e.id, topic, value, key))
            return
        assert self.run(self.store.send_message(e.id, topic, value, key))
        if key is not None:
            self.keys.add((e.id, key))
        self.inbox.setdefault((e.id, topic), []).append(value)
        if (
            e.receiving is not None
            and e.receiving[1] == topic
            and e.status in ("waiting", "pending")
        ):
            e.status, e.due = "pending", True

    @precondition(lambda self: self.where(lambda e: e.kind == "step"))
    @rule(index=st.integers(0, 100))
    def send_to_a_step_is_refused(self, index: int) -> None:
        e = pick(self.where(lambda e: e.kind == "step"), index)
        with pytest.raises(RunNotFoundError):
            self.run(self.store.send_message(e.id, "a", 1, None))

    @precondition(lambda self: self.running("workflow"))
    @rule(index=st.integers(0, 100), topic=st.sampled_from(TOPICS))
    def receive(self, index: int, topic: str) -> None:
        e = pick(self.running("workflow"), index)
        if e.receiving is not None:
            position, topic = e.receiving  # a replay repeats the receive that suspended
        else:
            position = e.next_position
            e.next_position += 1
        got = self.run(self.store.receive(e.fence, position, topic, None))
        unread = self.inbox.get((e.id, topic), [])
        if position in e.received:
            assert got == (True, e.received[position])
        elif unread:
            value = unread.pop(0)
            assert got == (True, value)
            e.received[position] = value
            e.journal[position] = "succeeded"
            e.receiving = None
        else:
            assert got == (False, None)
            e.journal[position] = "waiting"
            e.receiving = (position, topic)
            self.drop_lease(e, "waiting")

    # -- fences ----------------------------------------------------------------
    @precondition(lambda self: self.stale)
    @rule(
        index=st.integers(0, 100),
        write=st.sampled_from(
            ["journal", "finish", "sleep", "retry", "schedule", "wait", "receive", "release"]
        ),
    )
    def a_stale_fence_never_writes(self, index: int, write: str) -> None:
        fence = pick(self.stale, index)
        child = NewExecution(
            id=f"{fence.execution_id}/stale",
            root_id="x",
            kind="step",
            name="step",
            input=None,
            parent_id=fence.execution_id,
            position=999,
            child_index=0,
        )
        entry = JournalEntry(998, "step", "s", "succeeded", output="stale")
        writes: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
            "journal": lambda: self.store.append_journal(fence, entry),
            "finish": lambda: self.store.finish(fence, "succeeded", "stale", None),
            "sleep": lambda: self.store.suspend_until(fence, 0, entry),
            "retry": lambda: self.store.retry_later(fence, 0, ERROR),
            "schedule": lambda: self.store.schedule_children(fence, [entry], [child]),
            "wait": lambda: self.store.wait_for_children(fence, 997, [999], [entry], [child]),
            "receive": lambda: self.store.receive(fence, 998, "a", None),
            "release": lambda: self.store.release(fence),
        }
        if write == "release":  # a worker's give-back at shutdown: nothing to refuse
            self.run(writes[write]())
        else:
            with pytest.raises(LeaseLost):
                self.run(writes[write]())
        # Nothing changed: the invariants compare every row and journal with the model.

    # -- invariants -----------------------------------------------------------
    @invariant()
    def the_store_agrees_with_the_model(self) -> None:
        rows = {}
        for root in self.where(lambda e: e.parent is None):
            for row in self.run(self.store.list_executions(root.id)):
                rows[row.id] = row
        assert set(rows) == set(self.ex), "rows the model does not know, or lost ones"
        for e in self.ex.values():
            row = rows[e.id]
            assert (row.status, row.lease_owner, row.attempt) == (e.status, e.holder, e.attempt), (
                e.id
            )
            if row.status == "running":
                assert row.lease_expires_at is not None
        for e in self.ex.values():
            if e.journal or e.status == "waiting":
                journal = self.run(self.store.read_journal(e.id))
                assert {p: j.status for p, j in journal.items()} == e.journal, e.id
            if e.status == "waiting":
                # Not lost: it waits on what can still happen.
                assert any(rows[c].status not in TERMINAL for c in e.waited) or (
                    e.receiving is not None
                )
            if e.children:
                expected = [c for p in sorted(e.children) for c in e.children[p]]
                got = self.run(self.store.child_results(e.id, sorted(e.children)))
                assert [r.id for r in got] == expected
                assert self.outcomes(e.id, sorted(e.children)) == [
                    (c, rows[c].status) for c in expected
                ]

    def outcomes(self, parent: str, positions: list[int]) -> list[tuple[str, str]]:
        """The children's outcomes read in pages of two, as a parent collecting a gather."""
        read: list[tuple[str, str]] = []
        after = None
        while True:
            page = self.run(self.store.child_outcomes(parent, positions, after, 2))
            read.extend((o.id, o.status) for o in page)
            if len(page) < 2:
                return read
            after = (page[-1].position, page[-1].child_index)

    @invariant()
    def a_limited_queue_is_never_past_its_limit(self) -> None:
        running = [e for e in self.running() if e.queue == "limited"]
        assert len(running) <= LIMITED_CONCURRENCY

    def teardown(self) -> None:
        """Drive every run to its end: anything that cannot be finished was lost."""
        if not hasattr(self, "store"):
            return
        for _ in range(40):
            if all(e.status in TERMINAL for e in self.ex.values()):
                return
            for worker in WORKERS:
                self.worker_dies_and_is_reaped(worker)
            if self.where(lambda e: e.status == "pending" and not e.due):
                self.time_passes()
            for e in self.where(lambda e: e.status == "waiting" and e.receiving is not None):
                self.inbox.setdefault((e.id, e.receiving[1]), [])  # type: ignore[index]
                assert self.run(self.store.send_message(e.id, e.receiving[1], -1, None))  # type: ignore[index]
                self.inbox[(e.id, e.receiving[1])].append(-1)  # type: ignore[index]
                e.status, e.due = "pending", True
            self.claim("w1", 100)
            self.claim_limited("w1", 100)
            for e in self.running("workflow"):
                if e.receiving is not None:
                    self.receive(self.running("workflow").index(e), "a")
            for e in self.running():
                if e in self.finishable():
                    self.finish(self.finishable().index(e), ok=True)
            self.the_store_agrees_with_the_model()
        pytest.fail(
            f"runs that never end: {[e.id for e in self.ex.values() if e.status not in TERMINAL]}"
        )


def model_settings() -> settings:
    if settings.get_current_profile_name() == "long":
        return settings(settings.default, deadline=None)
    return settings(
        max_examples=25,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


def run_model(store_factory: Callable[[], Coroutine[Any, Any, Store]]) -> None:
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(store_factory())
    try:

        class Machine(StoreModel):
            pass

        Machine.store, Machine.loop = store, loop
        run_state_machine_as_test(Machine, settings=model_settings())
    finally:
        loop.run_until_complete(store.aclose())
        loop.close()


@pytest.mark.timeout(900)
def test_the_sqlite_store_behaves_as_the_model(tmp_path: Path) -> None:
    async def open_sqlite() -> Store:
        store = SqliteStore(tmp_path / "model.db")
        await store.migrate()
        return store

    run_model(open_sqlite)


@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_the_postgres_store_behaves_as_the_model(postgres_url: str) -> None:
    async def open_postgres() -> Store:
        return await open_store(Settings(database_url=postgres_url))

    run_model(open_postgres)
