"""Fan-out: children as independent durable executions (Zart's schedule_step + wait_all)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeVar, cast, overload

from ._context import DurableCall, ExecutionContext, StepHandle, current_context
from .errors import UsageError

__all__ = ["gather_durable", "schedule", "wait_all"]

T = TypeVar("T")


def _require_context(what: str, calls: Iterable[object] = ()) -> ExecutionContext:
    ctx = current_context()
    if ctx is None:
        for call in calls:  # outside a workflow a step call is a plain coroutine: drop it
            if inspect.iscoroutine(call):
                call.close()
        raise UsageError(
            f"{what} runs children durably and works only inside a @workflow; outside one, "
            "await the calls directly (or use asyncio.gather / an anyio task group)"
        )
    return ctx


def _check_calls(calls: Iterable[object], what: str) -> list[DurableCall[Any]]:
    checked: list[DurableCall[Any]] = []
    for call in calls:
        if not isinstance(call, DurableCall):
            raise UsageError(
                f"{what} takes calls of @step or @workflow functions, not yet awaited "
                f"(like `fetch(url)`), got {call!r}"
            )
        checked.append(call)
    return checked


def schedule(call: DurableCall[T]) -> StepHandle[T]:
    """Start `call` as a child execution and return its handle at once.

    The child is stored no later than the workflow's next durable call; several
    schedules in a row are stored in one transaction.

    Examples:
        >>> h1, h2 = flowz.schedule(fetch(a)), flowz.schedule(fetch(b))
        >>> page_a, page_b = await flowz.wait_all([h1, h2])
    """
    ctx = _require_context("flowz.schedule()", [call])
    [checked] = _check_calls([call], "flowz.schedule()")
    [handle] = ctx.schedule([checked])
    return handle


async def wait_all(
    handles: Iterable[StepHandle[Any]], *, return_exceptions: bool = False
) -> list[Any]:
    """Suspend until the children behind `handles` end; their results, in handle order.

    The workflow holds no worker while it waits. If a child failed, its error is
    raised (or, with `return_exceptions=True`, returned in its place).
    """
    handles = list(handles)
    for handle in handles:
        if not isinstance(handle, StepHandle):
            raise UsageError(
                f"flowz.wait_all() takes handles from flowz.schedule(), got {handle!r}"
            )
    ctx = _require_context("flowz.wait_all()")
    return await ctx.wait(handles, return_exceptions)


async def wait_first(
    handles: Sequence[StepHandle[T]], *, return_exceptions: bool = False
) -> tuple[int, T]:
    """Suspend until the first of the children behind `handles` ends: its index and result.

    The workflow holds no worker while it waits. Which child came first is journaled,
    so a replay takes the same one. The others keep running: await them, pass them
    to `wait_all`, or leave them, and the workflow's end cancels what is unfinished.
    If the first child failed, its error is raised (or, with `return_exceptions=True`,
    returned as the result).

    Examples:
        >>> fast, slow = flowz.schedule(mirror_a(url)), flowz.schedule(mirror_b(url))
        >>> index, page = await flowz.wait_first([fast, slow])
    """
    ctx = _require_context("flowz.wait_first()")
    handles = list(handles)
    if not handles:
        raise UsageError("flowz.wait_first() needs at least one handle from flowz.schedule()")
    for handle in handles:
        if not isinstance(handle, StepHandle):
            raise UsageError(
                f"flowz.wait_first() takes handles from flowz.schedule(), got {handle!r}"
            )
    return cast(tuple[int, T], await ctx.wait_first(handles, return_exceptions))


@overload
async def gather_durable(
    *calls: DurableCall[T], return_exceptions: Literal[False] = False
) -> list[T]: ...
@overload
async def gather_durable(
    *calls: DurableCall[T], return_exceptions: Literal[True]
) -> list[T | BaseException]: ...
async def gather_durable(*calls: DurableCall[Any], return_exceptions: bool = False) -> list[Any]:
    """Run the calls as durable child executions on any worker; their results in call order.

    All children and the parent's journal entry are stored in one transaction;
    the parent then waits without holding a worker and is resumed by the last
    child to end. A failed child's error is raised (after its retries) while its
    siblings run on (until the workflow itself ends, which cancels what is unfinished);
    with `return_exceptions=True` errors are returned in place.

    Examples:
        >>> pages = await gather_durable(*(fetch(url) for url in urls))
    """
    ctx = _require_context("gather_durable()", calls)
    checked = _check_calls(calls, "gather_durable()")
    return await ctx.wait(ctx.schedule(checked), return_exceptions)
