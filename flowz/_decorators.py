"""@step and @workflow: plain async functions in, durable units out.

The decorated function objects sit at the top of the package: `wf.run()` and
`wf.start()` start runs through the runtime below them.
"""

from __future__ import annotations

import datetime
import inspect
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast, final, overload

from ._client import Client
from ._context import (
    DurableCall,
    DurableFunction,
    check_run_arguments,
    current_context,
    reserved_parameters,
)
from ._queues import CatchUp, Queue, Schedule
from ._registry import (
    Definition,
    Registry,
    StepOptions,
    default_registry,
    import_name,
    journal_name,
)
from ._serde import Codec, checked_text
from ._types import Kind
from .errors import UsageError

if TYPE_CHECKING:
    from ._client import RunHandle
    from .progress import ProgressView

__all__ = ["StepFunction", "WorkflowFunction", "cron", "step", "workflow"]

P = ParamSpec("P")
R = TypeVar("R")


@final
class StepFunction(DurableFunction[P, R]):
    """A function decorated with @step.

    Called inside a workflow it returns a `DurableCall` to await (or to pass to
    `gather_durable`). Called anywhere else it is the plain function: a sync step
    returns its value, an async one a coroutine; nothing is journaled or retried.
    """

    def __repr__(self) -> str:
        return f"<flowz step {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> DurableCall[R]:
        if current_context() is None:
            return cast(DurableCall[R], self.definition.fn(*args, **kwargs))
        return DurableCall(self.definition, args, kwargs)


@final
class WorkflowFunction(DurableFunction[P, R]):
    """A function decorated with @workflow.

    Called inside a workflow it returns a `DurableCall` (a child workflow).
    Start runs with `run`, `start`, `flowz.run` or a `flowz.Client`; awaiting a
    call of it outside a workflow raises `UsageError` saying so.
    """

    def __repr__(self) -> str:
        return f"<flowz workflow {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> DurableCall[R]:
        return DurableCall(self.definition, args, kwargs)

    def options(
        self,
        *,
        id: str | None = None,
        progress: bool | ProgressView | None = None,
        deadline: datetime.datetime | None = None,
        priority: int | None = None,
        partition: str | None = None,
    ) -> WorkflowFunction[P, R]:
        """This workflow with run options: the run id, the live view, a deadline, ...

        `id` makes starting idempotent: the same id never starts a second run, and a
        run started again after a crash resumes. `progress` is True, False or a
        `flowz.progress.ProgressView` (default: FLOWZ_PROGRESS). `deadline` (an
        aware datetime) fails the run with `flowz.RunTimeoutError` when it passes,
        waiting included (the earlier of it and `@workflow(timeout=)` wins).
        `priority`: higher runs are claimed first within their queue (default 0), and
        so are their children. `partition`: the key a queue's `per_partition` limit
        counts by (a tenant, a user), inherited by the run's children.

        Examples:
            >>> report = await crawl.options(id="crawl-2026-11-29").run(urls)
            >>> flowz.run(crawl.options(id="crawl-1", progress=False), urls)
        """
        if deadline is not None and deadline.tzinfo is None:
            raise UsageError(
                f"options(deadline={deadline!r}) has no time zone: pass an aware datetime, "
                "like datetime.now(timezone.utc) + timedelta(hours=1)"
            )
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise UsageError(f"options(priority={priority!r}): a priority is a whole number")
        if partition is not None and (not isinstance(partition, str) or not partition):
            raise UsageError(f"options(partition={partition!r}): a partition key is a string")
        if id is not None:
            checked_text(id, "options(id=...): the run id")
        if partition is not None:
            checked_text(partition, "options(partition=...): the partition key")
        changes: dict[str, Any] = {"id": id, "progress": progress, "deadline": deadline}
        if priority is not None:
            changes["priority"] = priority
        if partition is not None:
            changes["partition"] = partition
        return cast(WorkflowFunction[P, R], self._replace_options(**changes))

    async def run(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run to completion in this event loop (with an in-process worker); return the result.

        Opens a client for the call (FLOWZ_* settings) and closes it before
        returning; for many calls, or to choose the database in code, open a
        `flowz.Client` once and use `client.run(wf, ...)`.

        Examples:
            >>> report = await crawl.run(urls)  # in a notebook cell
        """
        check_run_arguments(self, kwargs)
        async with Client() as client:
            return await client.run(self, *args, **kwargs)

    async def start(self, *args: P.args, **kwargs: P.kwargs) -> RunHandle[R]:
        """Enqueue a run for the workers and return its handle at once.

        Examples:
            >>> handle = await crawl.options(id="crawl-2026-11-29").start(urls)
            >>> report = await handle.result()
        """
        check_run_arguments(self, kwargs)
        async with Client() as client:
            return await client.start(self, *args, **kwargs)

    async def start_many(
        self, calls: Iterable[Any], *, ids: Iterable[str] | None = None
    ) -> list[RunHandle[R]]:
        """Enqueue one run per item of `calls` in a few transactions; their handles.

        Each item is one run's arguments: a tuple (positional), a dict (keywords), or
        the single argument of a one-parameter workflow. See `Client.start_many`.

        Examples:
            >>> handles = await resize.start_many([(url, 800) for url in urls])
        """
        async with Client() as client:
            return await client.start_many(self, calls, ids=ids)


def _definition(
    fn: Callable[..., Any], kind: Kind, name: str | None, options: StepOptions, registry: Registry
) -> Definition:
    if not callable(fn):
        raise UsageError(f"@{kind.value} decorates a function, got {fn!r}")
    is_async = inspect.iscoroutinefunction(fn)
    if kind is Kind.WORKFLOW and not is_async:
        raise UsageError(
            f"@workflow needs an async function, and {fn.__qualname__} is not: write "
            f"`async def {fn.__name__}(...)`"
        )
    reserved = set(reserved_parameters()) & set(inspect.signature(fn).parameters)
    if kind is Kind.WORKFLOW and reserved:
        raise UsageError(
            f"workflow {fn.__qualname__} has a parameter named {sorted(reserved)[0]!r}, which "
            "flowz reserves for run options (`wf.options(id=..., progress=...)`): rename "
            "the parameter"
        )
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise UsageError(
            f"@{kind.value}(name={name!r}): a journal name is a non-empty string; leave it "
            "out for module:function"
        )
    full_name = checked_text(name or journal_name(fn), f"@{kind.value}(name=...)")
    definition = Definition(
        full_name, kind, fn, Codec(fn, f"{kind.value} {full_name}"), is_async, options
    )
    registry.register(definition)
    if name is None and fn.__module__ != "__main__":
        registry.alias(import_name(fn), full_name)  # runs stored by flowz 0.1 still run
    return definition


@overload
def step(fn: Callable[P, Coroutine[Any, Any, R]], /) -> StepFunction[P, R]: ...
@overload
def step(fn: Callable[P, R], /) -> StepFunction[P, R]: ...
@overload
def step(
    *,
    retries: int = 0,
    backoff: float = 2.0,
    retry_delay: float = 1.0,
    timeout: float | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    name: str | None = None,
    registry: Registry | None = None,
    queue: Queue | None = None,
    partition: Callable[..., str] | None = None,
) -> _StepDecorator: ...
def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    retries: int = 0,
    backoff: float = 2.0,
    retry_delay: float = 1.0,
    timeout: float | None = None,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    name: str | None = None,
    registry: Registry | None = None,
    queue: Queue | None = None,
    partition: Callable[..., str] | None = None,
) -> Any:
    """Make a function a durable step: journaled inside a workflow, a plain call outside.

    Args:
        fn: the function, when used as `@step` without parentheses.
        retries: attempts after the first.
        backoff: multiplier of the delay after each failed attempt (with ±20 % jitter).
        retry_delay: seconds before the first retry.
        timeout: seconds one attempt may take; then it fails with StepTimeoutError.
        retry_on: exception types that are retried; others fail at once.
        name: the stable journal name (default `module:qualname`).
        registry: where to register (default: the process-wide registry); a run of a
            workflow of this registry is worked on by workers of the same registry.
        queue: a `flowz.Queue`: each call runs as a child execution of that queue,
            within its limits (awaited inline, it is a one-child gather).
        partition: a function of the call's arguments that returns its partition key
            (default: the calling run's), for the queue's `per_partition` limit.

    Examples:
        >>> @step(retries=3, timeout=30)
        ... async def fetch(url: str) -> str: ...
        >>> @step(queue=api, partition=lambda url: urlsplit(url).hostname)
        ... async def crawl(url: str) -> str: ...
    """
    if retries < 0 or retry_delay < 0 or backoff < 1 or (timeout is not None and timeout <= 0):
        raise UsageError(
            "@step options: retries and retry_delay must be >= 0, backoff >= 1 and "
            f"timeout > 0 (got retries={retries}, retry_delay={retry_delay}, "
            f"backoff={backoff}, timeout={timeout})"
        )
    _check_queue(queue, "@step")
    if partition is not None and not callable(partition):
        raise UsageError(
            f"@step(partition={partition!r}): pass a function of the step's arguments that "
            "returns the key, e.g. partition=lambda url: urlsplit(url).hostname"
        )
    options = StepOptions(
        retries=retries,
        backoff=backoff,
        retry_delay=retry_delay,
        timeout=timeout,
        retry_on=retry_on if isinstance(retry_on, tuple) else (retry_on,),
        queue=queue,
        partition=partition,
    )

    def decorate(f: Callable[..., Any]) -> StepFunction[Any, Any]:
        chosen = registry or default_registry()
        return StepFunction(_definition(f, Kind.STEP, name, options, chosen), chosen)

    return decorate if fn is None else decorate(fn)


def cron(
    schedule: str,
    *,
    timezone: str = "UTC",
    catch_up: CatchUp = "latest",
    name: str | None = None,
    registry: Registry | None = None,
    queue: Queue | None = None,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], WorkflowFunction[P, R]]:
    """A scheduled workflow: `@flowz.cron(expr)` is `@workflow(schedule=expr)`.

    Examples:
        >>> @flowz.cron("*/15 * * * *")
        ... async def sync_inventory(tick: datetime) -> int: ...
    """
    return workflow(
        name=name,
        registry=registry,
        queue=queue,
        schedule=schedule,
        timezone=timezone,
        catch_up=catch_up,
    )


def _check_queue(queue: object, where: str) -> None:
    if queue is not None and not isinstance(queue, Queue):
        raise UsageError(
            f"{where}(queue={queue!r}): pass a flowz.Queue, e.g. "
            'api = flowz.Queue("api", concurrency=10)'
        )


def _check_takes_the_tick(fn: Callable[..., Any]) -> None:
    """A scheduled workflow is called with one argument, the tick."""
    try:
        inspect.signature(fn).bind(datetime.datetime.now(datetime.UTC))
    except TypeError:
        raise UsageError(
            f"scheduled workflow {fn.__qualname__} must take the tick as its one argument: "
            f"`async def {fn.__name__}(tick: datetime) -> ...`"
        ) from None


class _StepDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> StepFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> StepFunction[P, R]: ...


@overload
def workflow(fn: Callable[P, Coroutine[Any, Any, R]], /) -> WorkflowFunction[P, R]: ...
@overload
def workflow(
    *,
    name: str | None = None,
    registry: Registry | None = None,
    timeout: float | None = None,
    queue: Queue | None = None,
    schedule: str | None = None,
    timezone: str = "UTC",
    catch_up: CatchUp = "latest",
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], WorkflowFunction[P, R]]: ...
def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    timeout: float | None = None,
    queue: Queue | None = None,
    schedule: str | None = None,
    timezone: str = "UTC",
    catch_up: CatchUp = "latest",
) -> Any:
    """Make an async function a durable workflow.

    Its body must be deterministic given its inputs and journaled results: use
    steps for I/O and `flowz.now()`/`uuid4()`/`random()` for what varies. With
    `registry=`, its runs are worked on by workers of that registry (`wf.run()`
    and a `flowz.Client` pick it up; `flowz worker --registry MODULE:ATTR`).
    With `timeout=`, a run (or a child run) fails with `flowz.RunTimeoutError` that
    many seconds after it was created, waiting included, and its unfinished
    children are cancelled; a child never gets longer than its parent has left.
    With `queue=`, its runs (and child runs) go to that `flowz.Queue`, within its
    limits. With `schedule=` (a cron expression, in `timezone`), workers that
    import it start one run per tick, exactly once across the fleet; the workflow
    takes the tick (an aware datetime) as its one argument. After downtime,
    `catch_up` picks the missed ticks that run: "latest" (the last one), "all",
    or "none".

    Examples:
        >>> @workflow
        ... async def crawl(urls: list[str]) -> int:
        ...     pages = await gather_durable(*(fetch(u) for u in urls))
        ...     return len(pages)
        >>> @workflow(schedule="0 9 * * mon-fri", timezone="Europe/Paris")
        ... async def morning_report(tick: datetime) -> str: ...
    """
    if timeout is not None and timeout <= 0:
        raise UsageError(f"@workflow(timeout={timeout!r}): give seconds > 0, or None")
    _check_queue(queue, "@workflow")
    planned = None if schedule is None else Schedule(schedule, timezone, catch_up)

    def decorate(f: Callable[..., Any]) -> WorkflowFunction[Any, Any]:
        chosen = registry or default_registry()
        if planned is not None:
            _check_takes_the_tick(f)
        options = StepOptions(timeout=timeout, queue=queue, schedule=planned)
        return WorkflowFunction(_definition(f, Kind.WORKFLOW, name, options, chosen), chosen)

    return decorate if fn is None else decorate(fn)
