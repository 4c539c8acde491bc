"""@step and @workflow: plain async functions in, durable units out."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, final, overload

from ._context import ExecutionContext, current_context
from ._registry import Definition, Registry, StepOptions, default_registry, journal_name
from ._serde import Codec
from ._types import Kind
from .errors import UsageError

if TYPE_CHECKING:
    from ._runner import RunHandle

__all__ = ["DurableCall", "StepFunction", "WorkflowFunction", "step", "workflow"]

P = ParamSpec("P")
R = TypeVar("R")


@final
class DurableCall(Generic[R]):
    """A call of a step or workflow, not yet awaited.

    Awaited inside a workflow it runs durably; outside, it is the plain function call.
    Pass it un-awaited to `gather_durable` or `flowz.schedule` to run it as a child.
    """

    __slots__ = ("args", "definition", "kwargs")

    def __init__(self, definition: Definition, args: tuple[Any, ...], kwargs: dict[str, Any]):
        self.definition = definition
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"<flowz call {self.definition.name}>"

    def __await__(self) -> Generator[Any, None, R]:
        ctx = current_context()
        if ctx is None:
            return self._plain().__await__()
        if self.definition.kind is Kind.STEP:
            # The position is taken here, synchronously, in program order (see ExecutionContext).
            return ctx.call_step(self).__await__()
        return self._child(ctx).__await__()

    async def _child(self, ctx: ExecutionContext) -> R:
        [result] = await ctx.wait(ctx.schedule([self]), return_exceptions=False)
        return result  # type: ignore[no-any-return]

    async def _plain(self) -> R:
        result = self.definition.fn(*self.args, **self.kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result  # type: ignore[no-any-return]


class _Durable(Generic[P, R]):
    def __init__(self, definition: Definition) -> None:
        self.definition = definition
        functools.update_wrapper(self, definition.fn)

    @property
    def name(self) -> str:
        """The journal name: `module:qualname` unless given with name=."""
        return self.definition.name

    @property
    def fn(self) -> Callable[..., Any]:
        """The undecorated function."""
        return self.definition.fn

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> DurableCall[R]:
        return DurableCall(self.definition, args, kwargs)


@final
class StepFunction(_Durable[P, R]):
    """A function decorated with @step."""

    def __repr__(self) -> str:
        return f"<flowz step {self.name}>"


@final
class WorkflowFunction(_Durable[P, R]):
    """A function decorated with @workflow."""

    def __repr__(self) -> str:
        return f"<flowz workflow {self.name}>"

    async def run(
        self, *args: Any, id: str | None = None, progress: Any = None, **kwargs: Any
    ) -> R:
        """Run to completion in this event loop (with an in-process worker); return the result.

        `progress` is True, False or a `flowz.progress.ProgressView` (default: FLOWZ_PROGRESS).

        Example:
            >>> report = await crawl.run(urls)  # in a notebook cell
        """
        from ._runner import run_async  # the runner composes engine and store: a layer above

        return await run_async(self, args, kwargs, id=id, progress=progress)

    async def start(self, *args: Any, id: str | None = None, **kwargs: Any) -> RunHandle[R]:
        """Enqueue a run for the workers and return its handle at once.

        Example:
            >>> handle = await crawl.start(urls, id="crawl-2026-11-29")
            >>> report = await handle.result()
        """
        from ._runner import start_async

        return await start_async(self, args, kwargs, id=id)


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
    reserved = {"id", "progress"} & set(inspect.signature(fn).parameters)
    if kind is Kind.WORKFLOW and reserved:
        raise UsageError(
            f"workflow {fn.__qualname__} has a parameter named {sorted(reserved)[0]!r}, which "
            "flowz reserves (`flowz.run(wf, ..., id=..., progress=...)`): rename the parameter"
        )
    full_name = name or journal_name(fn)
    definition = Definition(
        full_name, kind, fn, Codec(fn, f"{kind.value} {full_name}"), is_async, options
    )
    registry.register(definition)
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
) -> Any:
    """Make a function a durable step: journaled inside a workflow, plain outside.

    Args:
        fn: the function, when used as `@step` without parentheses.
        retries: attempts after the first.
        backoff: multiplier of the delay after each failed attempt (with ±20 % jitter).
        retry_delay: seconds before the first retry.
        timeout: seconds one attempt may take; then it fails with StepTimeoutError.
        retry_on: exception types that are retried; others fail at once.
        name: the stable journal name (default `module:qualname`).
        registry: where to register (default: the process-wide registry).

    Example:
        >>> @step(retries=3, timeout=30)
        ... async def fetch(url: str) -> str: ...
    """
    if retries < 0 or retry_delay < 0 or backoff < 1 or (timeout is not None and timeout <= 0):
        raise UsageError(
            "@step options: retries and retry_delay must be >= 0, backoff >= 1 and "
            f"timeout > 0 (got retries={retries}, retry_delay={retry_delay}, "
            f"backoff={backoff}, timeout={timeout})"
        )
    options = StepOptions(
        retries=retries,
        backoff=backoff,
        retry_delay=retry_delay,
        timeout=timeout,
        retry_on=retry_on if isinstance(retry_on, tuple) else (retry_on,),
    )

    def decorate(f: Callable[..., Any]) -> StepFunction[Any, Any]:
        return StepFunction(
            _definition(f, Kind.STEP, name, options, registry or default_registry())
        )

    return decorate if fn is None else decorate(fn)


class _StepDecorator(Protocol):
    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> StepFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> StepFunction[P, R]: ...


@overload
def workflow(fn: Callable[P, Coroutine[Any, Any, R]], /) -> WorkflowFunction[P, R]: ...
@overload
def workflow(
    *, name: str | None = None, registry: Registry | None = None
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], WorkflowFunction[P, R]]: ...
def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    registry: Registry | None = None,
) -> Any:
    """Make an async function a durable workflow.

    Its body must be deterministic given its inputs and journaled results: use
    steps for I/O and `flowz.now()`/`uuid4()`/`random()` for what varies.

    Example:
        >>> @workflow
        ... async def crawl(urls: list[str]) -> int:
        ...     pages = await gather_durable(*(fetch(u) for u in urls))
        ...     return len(pages)
    """

    def decorate(f: Callable[..., Any]) -> WorkflowFunction[Any, Any]:
        return WorkflowFunction(
            _definition(f, Kind.WORKFLOW, name, StepOptions(), registry or default_registry())
        )

    return decorate if fn is None else decorate(fn)
