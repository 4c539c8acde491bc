"""Messages to running workflows and their events, end to end on both stores."""

from __future__ import annotations

import anyio
import pytest

import flowz
from flowz import step, workflow
from flowz.testing import temp_client

pytestmark = pytest.mark.anyio


@step
async def charge(amount: int) -> str:
    return f"charged {amount}"


@workflow
async def payment(amount: int) -> str:
    await flowz.set_event("status", "waiting for approval")
    decision = await flowz.recv("approval", timeout=60)
    if decision is None:
        return "timed out"
    if not decision["ok"]:
        return "declined"
    await flowz.set_event("status", "charging")
    return await charge(amount)


@workflow
async def collect(n: int) -> list[int]:
    return [await flowz.recv("item") for _ in range(n)]


@workflow
async def patient(seconds: float) -> str:
    started = await flowz.now()
    message = await flowz.recv("never", timeout=seconds)
    waited = (await flowz.now()) - started
    return f"{message} after {waited.total_seconds():.0f}s"


@workflow
async def notifier(target: str) -> None:
    await flowz.send(target, "item", 7)
    await flowz.sleep(0.01)  # suspends: the resume replays the send, which must not send again


@workflow
async def collect_until_quiet() -> list[int]:
    items: list[int] = []
    while (item := await flowz.recv("item", timeout=1.0)) is not None:
        items.append(item)
    return items


@workflow
async def writer(words: list[str]) -> int:
    for word in words:
        await flowz.write_stream("tokens", word)
        if word == "wait":  # the reader has everything so far while the run waits
            await flowz.recv("go")
    await flowz.close_stream("tokens")
    await flowz.write_stream("log", "after the close of tokens")
    return len(words)


async def test_a_stream_is_read_while_the_run_writes_it_and_after_it_ends(
    database_url: str,
) -> None:
    words = ["durable", "tokens", "wait", "then", "more"]
    async with flowz.Client() as client, anyio.create_task_group() as tg:
        handle = await client.start(writer.options(id="w-1", progress=False), words)
        tg.start_soon(client.run, writer.options(id="w-1", progress=False), words)
        seen: list[str] = []
        with anyio.fail_after(20):
            async for token in handle.stream("tokens"):
                seen.append(token)
                if token == "wait":
                    await handle.send("go", None)
        assert seen == words
    assert [t async for t in handle.stream("tokens")] == words  # again, after the end
    assert [t async for t in handle.stream("log")] == ["after the close of tokens"]  # run ended
    assert [t async for t in handle.stream("missing")] == []


async def test_a_run_waits_for_approval_and_publishes_its_status(database_url: str) -> None:
    async with flowz.Client() as client, anyio.create_task_group() as tg:
        handle = await client.start(payment.options(id="pay-1", progress=False), 10)
        results: list[str] = []

        async def run_here() -> None:
            results.append(await client.run(payment.options(id="pay-1", progress=False), 10))

        tg.start_soon(run_here)
        with anyio.fail_after(20):
            assert await handle.get_event("status") == "waiting for approval"
            store = client.store
            while True:  # until the recv suspended: its worker is freed
                mark = store.change_mark()
                row = await store.get_execution("pay-1")
                assert row is not None
                if row.status == "pending" and row.lease_owner is None:
                    break
                await store.wait_for_change(1.0, mark)
        await handle.send("approval", {"ok": True})
    assert results == ["charged 10"]
    assert await handle.events() == {"status": "charging"}
    assert await handle.get_event("missing", timeout=0.1) is None  # the run ended without it


async def test_early_messages_are_kept_in_order_and_a_repeated_key_stores_one(
    database_url: str,
) -> None:
    async with flowz.Client() as client:
        handle = await client.start(collect.options(id="c-1", progress=False), 4)
        for item in (1, 2):
            await handle.send("item", item)
        stored = [await client.send("c-1", "item", 3, idempotency_key="delivery-3") for _ in "ab"]
        assert stored == [True, False]  # a webhook delivered twice: stored once
        await flowz.send("c-1", "item", 4)  # outside a workflow: the default database
        assert await client.run(collect.options(id="c-1", progress=False), 4) == [1, 2, 3, 4]


async def test_a_workflow_sends_once_even_when_it_replays(database_url: str) -> None:
    async with flowz.Client() as client:
        await client.start(collect_until_quiet.options(id="inbox", progress=False))
        await client.run(notifier.options(id="sender", progress=False), "inbox")
        journal = await client.store.read_journal("sender")
        assert [e.kind for e in journal.values()] == ["send", "sleep"]
        assert await client.run(collect_until_quiet.options(id="inbox", progress=False)) == [7]


async def test_a_recv_timeout_is_a_durable_timer() -> None:
    async with temp_client(skip_time=True) as client:  # an hour passes at once
        assert await client.run(patient, 3600) == "None after 3600s"


async def test_a_recv_times_out_on_both_stores(database_url: str) -> None:
    async with flowz.Client() as client:
        with anyio.fail_after(20):
            assert await client.run(patient.options(progress=False), 0.2) == "None after 0s"


async def test_bad_messages_get_clear_errors_and_store_nothing(database_url: str) -> None:
    async with flowz.Client() as client:
        with pytest.raises(flowz.RunNotFoundError, match="no workflow run with id 'nope'"):
            await client.send("nope", "item", 1)
        handle = await client.start(collect.options(id="c-2", progress=False), 1)
        with pytest.raises(flowz.SerializationError, match="of type object cannot be stored"):
            await handle.send("item", object())
        await handle.send("item", 5)
        assert await client.run(collect.options(id="c-2", progress=False), 1) == [5]
        with pytest.raises(flowz.RunEndedError, match="'c-2' has succeeded"):
            await handle.send("item", 6)
    with pytest.raises(flowz.UsageError, match="inside a workflow"):
        await flowz.recv("item")
    with pytest.raises(flowz.UsageError, match="inside a workflow"):
        await flowz.set_event("status", 1)


@workflow
async def bad_waits(case: str) -> object:
    if case == "negative timeout":
        return await flowz.recv("t", timeout=-1)
    if case == "no handles":
        return await flowz.wait_first([])
    return await flowz.wait_first([object()])  # type: ignore[list-item]


async def test_misused_primitives_get_clear_errors(database_url: str) -> None:
    async with flowz.Client() as client:
        for case, message in [
            ("negative timeout", r"flowz.recv\(timeout=-1\): give seconds >= 0"),
            ("no handles", "needs at least one handle"),
            ("not a handle", "takes handles from flowz.schedule"),
        ]:
            with pytest.raises(flowz.UsageError, match=message):
                await client.run(bad_waits.options(progress=False), case)
    for outside in (flowz.write_stream("s", 1), flowz.close_stream("s")):
        with pytest.raises(flowz.UsageError, match="works inside a workflow"):
            await outside
    handle = flowz.StepHandle(charge.definition, 0, 0)
    with pytest.raises(flowz.UsageError, match="outside the workflow that scheduled it"):
        await handle.cancel()
