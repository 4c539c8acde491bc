"""Talking to running workflows: messages, events and streams."""

from __future__ import annotations

from typing import Any

from ._client import Client, message
from ._context import current_context
from ._serde import checked_text, json_value
from .errors import UsageError

__all__ = ["close_stream", "recv", "send", "set_event", "write_stream"]


async def recv(topic: str, *, timeout: float | None = None) -> Any:
    """The next message on `topic` for this workflow run, in send order; None on timeout.

    While it waits the workflow suspends and frees its worker; a send wakes it at
    once. A message sent before the workflow got here was kept for it. Each message
    is taken once, and a replay gets the same messages in the same order. The
    timeout is durable: it counts while no worker runs the workflow.

    Examples:
        >>> decision = await flowz.recv("approval", timeout=24 * 3600)
        >>> if decision is None: ...  # nobody answered within a day
    """
    ctx = current_context()
    if ctx is None:
        raise UsageError(
            "flowz.recv() works inside a workflow: it takes the messages sent to its run"
        )
    if timeout is not None and timeout < 0:
        raise UsageError(f"flowz.recv(timeout={timeout!r}): give seconds >= 0, or None")
    return await ctx.recv(checked_text(topic, "flowz.recv(): the topic"), timeout)


async def set_event(name: str, value: Any) -> None:
    """Publish the latest value of this run's event `name` (progress, a status, a result).

    Journaled: a replay does not publish again. Readers use `handle.get_event(name)`
    or `flowz events RUN`.

    Examples:
        >>> await flowz.set_event("progress", {"done": 40, "of": 100})
    """
    ctx = current_context()
    if ctx is None:
        raise UsageError("flowz.set_event() works inside a workflow: it sets an event of its run")
    checked_text(name, "flowz.set_event(): the event's name")
    await ctx.set_event(name, json_value(value, f"the value of event {name!r}"))


async def write_stream(name: str, value: Any) -> None:
    """Append `value` to this run's stream `name` (tokens, log lines, partial results).

    Readers see it at once (`async for v in handle.stream(name)`, `flowz stream RUN
    NAME`). Journaled: a replay does not write it again.

    Examples:
        >>> async for token in llm.stream(prompt):
        ...     await flowz.write_stream("tokens", token)
        >>> await flowz.close_stream("tokens")
    """
    ctx = current_context()
    if ctx is None:
        raise UsageError("flowz.write_stream() works inside a workflow: it writes to its run")
    checked_text(name, "flowz.write_stream(): the stream's name")
    await ctx.write_stream(name, json_value(value, f"a value of stream {name!r}"), False)


async def close_stream(name: str) -> None:
    """End this run's stream `name`: its readers stop after its last value.

    A stream also ends for its readers when the run ends.
    """
    ctx = current_context()
    if ctx is None:
        raise UsageError("flowz.close_stream() works inside a workflow: it closes its stream")
    await ctx.write_stream(name, None, True)


async def send(run_id: str, topic: str, value: Any, *, idempotency_key: str | None = None) -> None:
    """Send a message to a workflow run; its `flowz.recv(topic)` gets it.

    Inside a workflow the send is journaled: a replay does not send it again.
    Outside, it uses the database of `FLOWZ_DATABASE_URL` (or use `Client.send`).

    Examples:
        >>> await flowz.send("order-7", "approval", {"approved": True})
    """
    payload = message(topic, value, idempotency_key)
    ctx = current_context()
    if ctx is not None:
        await ctx.send(run_id, topic, payload, idempotency_key)
        return
    async with Client() as client:
        await client.send(run_id, topic, payload, idempotency_key=idempotency_key)
