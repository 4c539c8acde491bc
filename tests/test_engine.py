"""Journal, replay, retries, timeouts and durable helpers, run in-process on SQLite."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import anyio
import pytest

import flowz
from flowz import Settings, gather_durable, step, workflow
from flowz.errors import NonDeterminismError, SerializationError, StepTimeoutError, UsageError
from flowz.store import open_store

calls: Counter[str] = Counter()
flaky_attempts: Counter[str] = Counter()
attempts_of_unstorable: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()
    flaky_attempts.clear()
    attempts_of_unstorable.clear()


async def journal_of(run_id: str) -> dict[int, object]:
    store = await open_store(Settings.from_env())
    try:
        return await store.read_journal(run_id)  # type: ignore[return-value]
    finally:
        await store.aclose()


async def row_of(run_id: str) -> object:
    store = await open_store(Settings.from_env())
    try:
        return await store.get_execution(run_id)
    finally:
        await store.aclose()


@step
async def add(a: int, b: int) -> int:
    calls["add"] += 1
    return a + b


@step
def multiply(a: int, b: int) -> int:
    calls["multiply"] += 1
    calls[f"thread:{threading.current_thread() is threading.main_thread()}"] += 1
    return a * b


class Boom(Exception):
    pass


@step
async def explode_once(tag: str) -> str:
    calls[f"explode:{tag}"] += 1
    if calls[f"explode:{tag}"] == 1:
        raise Boom(f"first call of {tag}")
    return tag


@workflow
async def arithmetic(x: int) -> int:
    y = await add(x, 1)
    z = await multiply(y, 10)
    return await add(z, 0)


def test_a_step_outside_a_workflow_is_a_plain_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # A sync step returns its value; an async step returns a coroutine, as undecorated.
    assert multiply(2, 3) == 6
    coroutine = add(2, 3)
    assert inspect.iscoroutine(coroutine)
    assert asyncio.run(coroutine) == 5

    async def together() -> list[int]:
        return list(await asyncio.gather(add(1, 1), add(2, 2)))  # noqa: TID251

    assert asyncio.run(together()) == [2, 4]
    assert calls["add"] == 3 and calls["multiply"] == 1
    assert not (tmp_path / ".flowz").exists()  # nothing journaled: no database was made


def test_a_workflow_awaited_outside_a_run_says_how_to_start_it() -> None:
    async def main() -> int:
        return await arithmetic(4)

    with pytest.raises(UsageError, match=r"outside a running workflow: start a workflow with"):
        anyio.run(main)


def test_inline_steps_run_and_are_journaled(database_url: str) -> None:
    assert flowz.run(arithmetic.options(id="a1"), 4) == 50
    assert calls["add"] == 2 and calls["multiply"] == 1
    assert calls["thread:False"] == 1, "a sync step runs in a worker thread"
    journal = anyio.run(journal_of, "a1")
    assert sorted(journal) == [0, 1, 2]
    assert [journal[p].name for p in range(3)] == [add.name, multiply.name, add.name]  # type: ignore[attr-defined]


def test_a_finished_run_returns_its_stored_result_without_running(database_url: str) -> None:
    assert flowz.run(arithmetic.options(id="a2"), 4) == 50
    calls.clear()
    assert flowz.run(arithmetic.options(id="a2"), 4) == 50
    assert calls == Counter()


@workflow
async def fails_after_two_steps(x: int) -> int:
    a = await add(x, 1)
    b = await multiply(a, 2)
    return await explode_once(str(b)) and b


def test_retry_replays_completed_steps_and_reruns_the_failed_one(database_url: str) -> None:
    with pytest.raises(Boom, match="first call of 4"):
        flowz.run(fails_after_two_steps.options(id="r1"), 1)
    assert (calls["add"], calls["multiply"], calls["explode:4"]) == (1, 1, 1)

    async def retry() -> int:
        handle = await fails_after_two_steps.options(id="r1").start(1)
        assert await handle.status() == flowz.Status.FAILED
        await handle.retry()
        return await fails_after_two_steps.options(id="r1").run(1)

    assert anyio.run(retry) == 4
    assert (calls["add"], calls["multiply"], calls["explode:4"]) == (1, 1, 2)


def test_a_rebuilt_error_carries_the_remote_traceback(database_url: str) -> None:
    with pytest.raises(Boom) as first:
        flowz.run(fails_after_two_steps.options(id="tb"), 5)
    del first
    with pytest.raises(Boom) as stored:
        flowz.run(fails_after_two_steps.options(id="tb"), 5)
    assert any("Remote traceback" in note for note in stored.value.__notes__)
    assert any("explode_once" in note for note in stored.value.__notes__)


def make_versioned(version: int) -> flowz.WorkflowFunction[[int], int]:
    @workflow(name="tests:versioned")
    async def versioned(x: int) -> int:
        if version == 1:
            await add(x, 1)
        else:
            await multiply(x, 1)
        return await explode_once(f"v{x}") and x

    return versioned


def test_changing_the_workflow_between_runs_raises_non_determinism(database_url: str) -> None:
    with pytest.raises(Boom):
        flowz.run(make_versioned(1).options(id="nd"), 7)
    changed = make_versioned(2)

    async def retry() -> None:
        handle = await changed.options(id="nd").start(7)
        await handle.retry()
        await changed.options(id="nd").run(7)

    with pytest.raises(NonDeterminismError) as caught:
        anyio.run(retry)
    assert add.name in str(caught.value) and multiply.name in str(caught.value)
    assert "position 0" in str(caught.value)
    assert calls["multiply"] == 0
    row = anyio.run(row_of, "nd")
    assert row.status == "failed"  # type: ignore[attr-defined]
    assert "NonDeterminismError" in row.error["type"]  # type: ignore[attr-defined]

    restored = make_versioned(1)

    async def retry_restored() -> int:
        handle = await restored.options(id="nd").start(7)
        await handle.retry()
        return await restored.options(id="nd").run(7)

    assert anyio.run(retry_restored) == 7


@step(retries=2, retry_delay=0.01, backoff=1.0)
async def flaky(tag: str) -> str:
    flaky_attempts[tag] += 1
    if flaky_attempts[tag] <= 2:
        raise ConnectionError(f"{tag} attempt {flaky_attempts[tag]}")
    return f"{tag} ok after {flaky_attempts[tag]}"


@step(retries=1, retry_delay=0.01, retry_on=ConnectionError)
async def wrong_kind_of_error(tag: str) -> str:
    flaky_attempts[tag] += 1
    raise ValueError(tag)


@workflow
async def uses_flaky(tag: str) -> str:
    return await flaky(tag)


@workflow
async def uses_wrong_kind(tag: str) -> str:
    return await wrong_kind_of_error(tag)


@workflow
async def gathers_flaky(tag: str) -> list[str]:
    return await gather_durable(flaky(tag + "-child"))


def test_a_step_that_fails_twice_succeeds_on_its_third_attempt(database_url: str) -> None:
    assert flowz.run(uses_flaky.options(id="f1"), "x") == "x ok after 3"
    entry = anyio.run(journal_of, "f1")[0]
    assert entry.attempt == 3 and entry.status == "succeeded"  # type: ignore[attr-defined]


def test_a_child_step_is_retried_by_its_own_policy(database_url: str) -> None:
    assert flowz.run(gathers_flaky.options(id="f2"), "g") == ["g-child ok after 3"]
    row = anyio.run(row_of, "f2/0/0")
    assert row.attempt == 3 and row.status == "succeeded"  # type: ignore[attr-defined]


def test_errors_outside_retry_on_are_not_retried(database_url: str) -> None:
    with pytest.raises(ValueError, match="w"):
        flowz.run(uses_wrong_kind, "w")
    assert flaky_attempts["w"] == 1


@step(timeout=0.2)
async def too_slow() -> None:
    await anyio.sleep(30)


@step(timeout=0.2)
def too_slow_sync() -> None:
    time.sleep(1)


@workflow
async def times_out(sync: bool) -> None:
    await (too_slow_sync() if sync else too_slow())


@pytest.mark.parametrize("sync", [False, True])
def test_a_step_past_its_timeout_fails_with_a_timeout_error(database_url: str, sync: bool) -> None:
    started = time.monotonic()
    with pytest.raises(StepTimeoutError, match=r"timeout of 0\.2 s") as caught:
        flowz.run(times_out, sync)
    assert isinstance(caught.value, TimeoutError)
    assert time.monotonic() - started < 5


@step(retries=1, retry_delay=1.5, backoff=1.0)
async def slow_retry(tag: str) -> str:
    calls[tag] += 1
    if calls[tag] == 1:
        raise ConnectionError("later")
    return "done"


@workflow
async def suspends_for_a_retry(tag: str) -> str:
    return await slow_retry(tag)


def test_a_long_retry_delay_suspends_the_workflow(database_url: str) -> None:
    async def main() -> tuple[str, object]:
        handle = await suspends_for_a_retry.options(id="long").start("s")
        store = await open_store(Settings.from_env())
        from flowz._registry import default_registry
        from flowz._worker import Worker

        worker = Worker(store, default_registry(), Settings.from_env())
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            while calls["s"] == 0:
                await anyio.sleep(0.01)
            await anyio.sleep(0.2)
            row = await store.get_execution("long")
            journal = await store.read_journal("long")
            assert row is not None and row.status == "pending" and row.run_at > time.time()
            assert journal[0].status == "retrying" and journal[0].attempt == 1
            result = await handle.result(timeout=10)
            worker.stop()
        await store.aclose()
        return result, None

    assert anyio.run(main)[0] == "done"
    assert calls["s"] == 2


@workflow
async def timestamps() -> tuple[dt.datetime, uuid.UUID, float]:
    moment = await flowz.now()
    ident = await flowz.uuid4()
    chance = await flowz.random()
    await explode_once("helpers")
    return moment, ident, chance


def test_now_uuid4_and_random_replay_the_same_values(database_url: str) -> None:
    with pytest.raises(Boom):
        flowz.run(timestamps.options(id="h"))
    first = anyio.run(journal_of, "h")

    async def retry() -> tuple[dt.datetime, uuid.UUID, float]:
        handle = await timestamps.options(id="h").start()
        await handle.retry()
        return await timestamps.options(id="h").run()

    moment, ident, chance = anyio.run(retry)
    assert moment.isoformat() == first[0].output  # type: ignore[attr-defined]
    assert str(ident) == first[1].output  # type: ignore[attr-defined]
    assert chance == first[2].output  # type: ignore[attr-defined]
    assert moment.tzinfo is not None


@workflow
async def sleeper(seconds: float) -> str:
    await add(1, 1)
    await flowz.sleep(seconds)
    return "woke"


def test_a_durable_sleep_frees_the_worker_and_survives_a_restart(database_url: str) -> None:
    async def main() -> str:
        from flowz._registry import default_registry
        from flowz._worker import Worker

        settings = Settings.from_env()
        handle = await sleeper.options(id="sl").start(1.0)
        store = await open_store(settings)
        worker = Worker(store, default_registry(), settings)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            while (row := await store.get_execution("sl")) is not None and row.attempt == 0:
                await store.wait_for_change(0.05)
            while calls["add"] == 0 or (await store.get_execution("sl")).status != "pending":  # type: ignore[union-attr]
                await store.wait_for_change(0.05)
            worker.stop()  # the process "stops" while the workflow sleeps
        row = await store.get_execution("sl")
        assert row is not None and row.status == "pending" and row.run_at > time.time()
        await store.aclose()
        # A new worker (as after a restart) finds the timer in the database.
        return await sleeper.options(id="sl").run(1.0) and await handle.result()

    started = time.monotonic()
    assert anyio.run(main) == "woke"
    assert time.monotonic() - started >= 1.0
    assert calls["add"] == 1


def test_idempotent_start_by_id(database_url: str) -> None:
    async def main() -> None:
        first = await arithmetic.options(id="same").start(1)
        second = await arithmetic.options(id="same").start(1)
        assert first.id == second.id == "same"
        with pytest.raises(UsageError, match="already exists with other arguments"):
            await arithmetic.options(id="same").start(99)
        assert await arithmetic.options(id="same", progress=False).run(1) == 20
        store = await open_store(Settings.from_env())
        rows = await store.list_executions("same")
        await store.aclose()
        assert len(rows) == 1 and rows[0].input == {"x": 1}
        with pytest.raises(UsageError, match="already belongs to a run of"):
            await uses_flaky.options(id="same").start("z")

    anyio.run(main)


@step
async def whoami() -> str:
    return flowz.current_step().idempotency_key


@workflow
async def keys() -> list[str]:
    inline = await whoami()
    children = await gather_durable(whoami(), whoami())
    return [inline, *children]


def test_idempotency_keys_are_stable_and_distinct(database_url: str) -> None:
    assert flowz.run(keys.options(id="k")) == ["k#0", "k/1/0#0", "k/1/1#0"]
    with pytest.raises(UsageError, match="outside a step"):
        flowz.current_step()


@workflow
async def concurrent_inline(n: int) -> list[int]:
    results: list[int] = [0] * n

    async def one(i: int) -> None:
        await anyio.sleep((n - i) * 0.01)
        results[i] = await add(i, 100)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return results


def test_concurrent_inline_steps_replay_in_program_order(database_url: str) -> None:
    assert flowz.run(concurrent_inline.options(id="c"), 5) == [100, 101, 102, 103, 104]
    journal = anyio.run(journal_of, "c")
    assert sorted(journal) == [0, 1, 2, 3, 4]
    calls.clear()
    assert flowz.run(concurrent_inline.options(id="c"), 5) == [100, 101, 102, 103, 104]
    assert calls["add"] == 0


def test_bad_decorator_use_is_refused_clearly() -> None:
    with pytest.raises(UsageError, match="needs an async function"):
        workflow(lambda: None)
    with pytest.raises(UsageError, match="parameter named 'id'"):

        @workflow
        async def has_id(id: str) -> None: ...

    with pytest.raises(UsageError, match="retries and retry_delay"):
        step(retries=-1)
    with pytest.raises(flowz.NotAWorkflowError, match="not a workflow"):
        flowz.run(add, 1, 2)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="only inside a @workflow"):
        anyio.run(lambda: gather_durable(add(1, 2)))


class Opaque:
    pass


@step
async def takes_anything(value):  # type: ignore[no-untyped-def]
    return "stored"


@step
async def returns_opaque() -> int:
    return Opaque()  # type: ignore[return-value]


@workflow
async def passes_opaque(kind: str) -> str:
    await add(1, 1)
    if kind == "argument":
        return await takes_anything(Opaque())  # type: ignore[no-any-return]
    await returns_opaque()
    return "unreachable"


def test_a_non_serialisable_run_input_fails_before_anything_is_stored(database_url: str) -> None:
    with pytest.raises(SerializationError) as caught:
        flowz.run(arithmetic.options(id="bad"), object())  # type: ignore[arg-type]
    message = str(caught.value)
    assert "arithmetic" in message and "'x'" in message and "object" in message
    assert anyio.run(row_of, "bad") is None


@pytest.mark.parametrize(
    ("kind", "named"), [("argument", "parameter 'value'"), ("result", "the result")]
)
def test_a_non_serialisable_step_value_fails_the_run_naming_step_and_value(
    database_url: str, kind: str, named: str
) -> None:
    with pytest.raises(SerializationError) as caught:
        flowz.run(passes_opaque.options(id=kind), kind)
    message = str(caught.value)
    assert named in message and "Opaque" in message
    step_name = takes_anything.name if kind == "argument" else returns_opaque.name
    assert step_name in message
    journal = anyio.run(journal_of, kind)
    assert journal[0].status == "succeeded"  # type: ignore[attr-defined]


def test_a_run_held_by_a_silent_worker_elsewhere_is_taken_over_when_its_lease_expires(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWZ_LEASE_SECONDS", "0.6")

    async def main() -> int:
        settings = Settings.from_env()
        await arithmetic.options(id="held").start(2)
        store = await open_store(settings)
        # A worker on another machine claims the run, then goes silent (no heartbeat).
        [claim] = await store.claim("elsewhere:1:x", [arithmetic.name], "default", 1, 0.6)
        assert claim.execution.id == "held"
        await store.aclose()
        started = time.monotonic()
        result = await arithmetic.options(id="held").run(2)
        assert time.monotonic() - started >= 0.3  # it waited for the lease to expire
        return result

    assert anyio.run(main) == 30


@step
def sync_whoami() -> str:
    return flowz.current_step().idempotency_key


@step(retries=3, retry_delay=0.01)
async def unstorable() -> int:
    attempts_of_unstorable["n"] += 1
    return Opaque()  # type: ignore[return-value]


@workflow
async def sync_key_and_unstorable() -> str:
    key = await sync_whoami()
    await unstorable()
    return key


def test_sync_steps_see_their_context_and_usage_errors_are_not_retried(database_url: str) -> None:
    with pytest.raises(SerializationError):
        flowz.run(sync_key_and_unstorable.options(id="sk"))
    assert attempts_of_unstorable["n"] == 1
    assert anyio.run(journal_of, "sk")[0].output == "sk#0"  # type: ignore[attr-defined]


def test_flowz_run_inside_a_running_loop_says_to_await_instead(database_url: str) -> None:
    async def main() -> None:
        flowz.run(arithmetic, 1)

    with pytest.raises(UsageError, match=r"await workflow\.run"):
        anyio.run(main)


stopped: list[str] = []


@step
async def hangs(tag: str) -> str:
    try:
        await anyio.sleep(60)
    except anyio.get_cancelled_exc_class():
        stopped.append(tag)
        raise
    return tag


@workflow
async def cancellable(tag: str) -> str:
    await add(1, 2)
    return await hangs(tag)


def test_cancelling_a_run_stops_its_running_step_at_the_next_heartbeat(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWZ_LEASE_SECONDS", "0.6")  # heartbeat every 0.2 s

    async def main() -> None:
        handle = await cancellable.options(id="cancel-me").start("c1")
        async with anyio.create_task_group() as tg:

            async def cancel_when_running() -> None:
                store = await open_store(Settings.from_env())
                while len(await store.read_journal("cancel-me")) < 1:
                    await store.wait_for_change(0.05)
                await anyio.sleep(0.1)
                await handle.cancel()
                await store.aclose()

            tg.start_soon(cancel_when_running)
            with pytest.raises(flowz.RunCancelledError):
                await cancellable.options(id="cancel-me", progress=False).run("c1")
        assert await handle.status() == flowz.Status.CANCELLED

    stopped.clear()
    started = time.monotonic()
    anyio.run(main)
    assert stopped == ["c1"], "the running step was cancelled, not left to finish"
    assert time.monotonic() - started < 10


def test_a_stored_run_naming_an_arbitrary_function_is_never_called(
    database_url: str, tmp_path: Path
) -> None:
    """Security: a worker runs only registered functions; stored names are not imported."""
    marker = tmp_path / "pwned"

    async def main() -> str:
        from flowz._registry import default_registry
        from flowz._worker import Worker
        from flowz.store._protocol import NewExecution

        store = await open_store(Settings.from_env())
        for run_id, name in [("evil", "os:system"), ("evil2", "builtins:exec")]:
            await store.create_run(
                NewExecution(
                    id=run_id, root_id=run_id, kind="workflow", name=name,
                    input={"command": f"touch {marker}"},
                )
            )  # fmt: skip
        worker = Worker(store, default_registry(), Settings.from_env())
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await arithmetic.options(id="legit").start(1)
            while (row := await store.get_execution("legit")) is None or row.status != "succeeded":
                await store.wait_for_change(0.05)
            worker.stop()
        statuses = {r: (await store.get_execution(r)).status for r in ("evil", "evil2")}  # type: ignore[union-attr]
        await store.aclose()
        return str(statuses)

    assert anyio.run(main) == "{'evil': 'pending', 'evil2': 'pending'}"
    assert not marker.exists()


@workflow
async def swallows_everything(x: int) -> str:
    try:
        return f"ran {await add(x, 1)}"
    except Exception as exc:  # a broad handler in user code
        return f"swallowed {type(exc).__name__}"


def test_a_store_failure_in_a_durable_call_is_not_the_workflows_to_catch(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowz.errors import StoreNotWritableError
    from flowz.store import PostgresStore, SqliteStore

    store_class = PostgresStore if database_url.startswith("postgresql") else SqliteStore
    real_append = store_class.append_journal

    async def full_disk(*args: object, **kwargs: object) -> None:
        raise StoreNotWritableError("the disk is full (simulated)")

    monkeypatch.setattr(store_class, "append_journal", full_disk)
    with pytest.raises(StoreNotWritableError, match="simulated"):
        flowz.run(swallows_everything.options(id="swallow", progress=False), 1)
    row = anyio.run(row_of, "swallow")
    assert row.status in ("pending", "running")  # type: ignore[attr-defined]

    monkeypatch.setattr(store_class, "append_journal", real_append)
    assert flowz.run(swallows_everything.options(id="swallow", progress=False), 1) == "ran 2"


@pytest.mark.anyio
async def test_runs_of_one_client_share_a_worker_that_still_reaps(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import subprocess

    from flowz.store._protocol import NewExecution

    monkeypatch.setenv("FLOWZ_LEASE_SECONDS", "0.3")  # a reused worker reaps every lease/3
    quiet = arithmetic.options(progress=False)
    async with flowz.Client() as client:
        store = client.store
        assert await client.run(quiet, 1) == 20
        [parked] = await store.list_workers()  # registered once for this client
        # A run held by a worker process of this host that died (kill -9) meanwhile.
        dead = subprocess.Popen(["true"])
        dead.wait()
        await store.register_worker("dead-worker", socket.gethostname(), dead.pid)
        await store.create_run(
            NewExecution(
                id="orphan",
                root_id="orphan",
                kind="workflow",
                name=arithmetic.name,
                input=arithmetic.definition.codec.dump_args((2,), {}),
            )
        )
        assert await store.claim("dead-worker", [arithmetic.name], "default", 1, 600) != []
        await anyio.sleep(0.15)  # longer than lease/3 since the last reap: time must pass here

        assert await client.run(quiet, 3) == 40
        assert [w.id for w in await store.list_workers()] == [parked.id]
        orphan = await store.get_execution("orphan")
        assert orphan is not None and orphan.status == "succeeded" and orphan.output == 30
    async with flowz.Client() as client:
        assert await client.store.list_workers() == []  # closing the client deregistered it


@pytest.mark.anyio
async def test_work_a_worker_could_not_give_back_is_taken_up_again_when_its_lease_lapses(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowz._registry import default_registry
    from flowz._worker import Worker
    from flowz.errors import StoreError
    from flowz.store import PostgresStore, SqliteStore

    store_class = PostgresStore if database_url.startswith("postgresql") else SqliteStore
    failures = {"append_journal": 1, "release": 1}  # one step write fails, then the give-back
    for name in failures:
        real = getattr(store_class, name)

        async def failing_once(*args: object, _name: str = name, _real: object = real) -> object:
            if failures[_name] > 0:
                failures[_name] -= 1
                raise StoreError(f"{_name} failed (simulated)")
            return await _real(*args)  # type: ignore[operator]

        monkeypatch.setattr(store_class, name, failing_once)
    monkeypatch.setenv("FLOWZ_LEASE_SECONDS", "0.6")  # heartbeats every 0.2 s
    settings = Settings.from_env()
    handle = await arithmetic.options(id="given-back").start(5)
    store = await open_store(settings)
    worker = Worker(store, default_registry(), settings)  # a `flowz worker`: it keeps going
    try:
        with anyio.fail_after(20):  # held and renewed forever, it would never finish
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                assert await handle.result() == 60
                worker.stop()
    finally:
        await store.aclose()
    assert failures == {"append_journal": 0, "release": 0}


def test_a_journal_name_follows_the_file_not_the_import_and_old_names_still_resolve() -> None:
    import importlib

    from flowz._registry import default_registry, journal_name, same_function

    module = importlib.import_module("examples.quickstart")  # examples/ is not a package
    assert module.fan.name == "quickstart:fan" == journal_name(module.fan.definition.fn)
    assert journal_name(
        test_a_journal_name_follows_the_file_not_the_import_and_old_names_still_resolve
    ).startswith("tests.test_engine:")
    # Runs stored by flowz 0.1 under the import name are claimed and replay.
    assert default_registry().get("examples.quickstart:fan") is module.fan.definition
    assert "examples.quickstart:fan" in default_registry().names()
    assert "examples.quickstart:fan" not in default_registry().known()
    assert same_function("examples.quickstart:double", "quickstart:double")
    assert not same_function("other.double:x", "quickstart:double")
    assert not same_function("examples.quickstart:double", "quickstart:total")
    assert not same_function("xquickstart:double", "quickstart:double")


def test_two_functions_of_different_files_cannot_share_a_journal_name(tmp_path: Path) -> None:
    from flowz import Registry
    from flowz.errors import RegistrationError

    registry = Registry()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "jobs.py").write_text(
            "import flowz\n"
            "def define(registry):\n"
            "    @flowz.step(registry=registry, name='jobs:fetch')\n"
            "    async def fetch() -> int:\n"
            "        return 1\n"
        )
    namespaces: list[dict[str, object]] = []
    for folder in ("a", "b"):
        path = tmp_path / folder / "jobs.py"
        namespace: dict[str, object] = {"__name__": f"{folder}_jobs"}
        exec(compile(path.read_text(), str(path), "exec"), namespace)
        namespaces.append(namespace)
    namespaces[0]["define"](registry)  # type: ignore[operator]
    namespaces[0]["define"](registry)  # type: ignore[operator]  # the same file again: fine
    with pytest.raises(RegistrationError, match=r"b/jobs.py cannot have it: give one of them"):
        namespaces[1]["define"](registry)  # type: ignore[operator]
