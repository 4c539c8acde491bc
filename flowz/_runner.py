"""`flowz.run()`: the one synchronous entry point, over a client opened for the call."""

from __future__ import annotations

from typing import ParamSpec, TypeVar

import anyio

from ._client import Client
from ._context import DurableFunction, check_run_arguments, check_workflow
from .errors import UsageError

__all__ = ["run"]

P = ParamSpec("P")
R = TypeVar("R")


def run(wf: DurableFunction[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run a workflow to completion from synchronous code and return its result.

    Uses the database of `FLOWZ_DATABASE_URL` (default `./.flowz/flowz.db`) and a
    worker in this process. With `wf.options(id=...)`, a finished run returns its
    stored result and an unfinished one resumes; nothing already journaled runs
    again. The live progress view is drawn on standard error unless
    `wf.options(progress=False)` (or FLOWZ_PROGRESS=0).

    Examples:
        >>> flowz.run(fan, 1000)
        999000
        >>> flowz.run(fan.options(id="fan-1000"), 1000)  # resumable by its id
        999000
    """
    import asyncio  # only to tell whether a loop runs here; anyio does not load it

    check_run_arguments(check_workflow(wf), kwargs)
    try:
        asyncio.get_running_loop()
        running = True
    except RuntimeError:
        running = False
    if running:
        raise UsageError(
            "flowz.run() blocks, and an event loop is already running here (a notebook, or "
            "async code): use `await workflow.run(...)` instead"
        )

    async def main() -> R:
        async with Client() as client:
            return await client.run(wf, *args, **kwargs)

    # Outside the `except` above: a run's error must not carry "no running event loop".
    return anyio.run(main)
