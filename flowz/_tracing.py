"""OpenTelemetry spans for run and step attempts (the `otel` extra).

Without `opentelemetry` installed every function here returns at once: no cost.
A run stores the trace context of whoever started it, and each child the context
of the gather that scheduled it, so a run's whole tree, across worker processes and
machines, is one trace.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator
from importlib.util import find_spec
from typing import Any

from .store._protocol import ExecutionRow

__all__ = ["caller_context", "enabled", "execution_span", "gather_context", "outcome", "step_span"]

_NOTHING = contextlib.nullcontext()


@functools.cache
def enabled() -> bool:
    """Whether opentelemetry is installed (looked up once)."""
    return find_spec("opentelemetry") is not None


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer("flowz")


def _current_context() -> str | None:
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, sort_keys=True) if carrier else None


def caller_context() -> str | None:
    """The caller's trace context, stored with a run it starts (None: no active span)."""
    return _current_context() if enabled() else None


def execution_span(row: ExecutionRow) -> contextlib.AbstractContextManager[Any]:
    """The span of one attempt of a claimed execution, under the context stored with it."""
    if not enabled():
        return _NOTHING
    return _execution_span(row)


@contextlib.contextmanager
def _execution_span(row: ExecutionRow) -> Iterator[Any]:
    from opentelemetry import propagate

    parent = None
    if row.trace_context:
        with contextlib.suppress(ValueError, TypeError):
            parent = propagate.extract(json.loads(row.trace_context))
    attributes: dict[str, Any] = {
        "flowz.run_id": row.root_id,
        "flowz.execution_id": row.id,
        "flowz.name": row.name,
        "flowz.attempt": row.attempt,
        "flowz.kind": row.kind,
    }
    if row.position is not None:
        attributes["flowz.position"] = row.position
        attributes["flowz.child_index"] = row.child_index or 0
    label = "run" if row.parent_id is None else row.kind
    with _tracer().start_as_current_span(
        f"{label} {row.name}", context=parent, attributes=attributes
    ) as span:
        yield span


def _recording() -> bool:
    """Whether the application installed a tracer provider: spans are recorded."""
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def step_span(
    execution: ExecutionRow, name: str, position: int, attempt: int
) -> contextlib.AbstractContextManager[Any]:
    """The span of one attempt of an inline step, under the workflow attempt's span.

    No span while no tracer provider is installed: it would record nothing and
    has no children, and it cost a fifth of a step's CPU.
    """
    if not enabled() or not _recording():
        return _NOTHING
    return _tracer().start_as_current_span(  # type: ignore[no-any-return]
        f"step {name}",
        attributes={
            "flowz.run_id": execution.root_id,
            "flowz.execution_id": execution.id,
            "flowz.name": name,
            "flowz.attempt": attempt,
            "flowz.position": position,
            "flowz.kind": "step",
        },
    )


def gather_context(execution: ExecutionRow, name: str, position: int, width: int) -> str | None:
    """A span for children scheduled at `position`; its context, for the children to store."""
    if not enabled():
        return None
    attributes = {
        "flowz.run_id": execution.root_id,
        "flowz.execution_id": execution.id,
        "flowz.name": name,
        "flowz.position": position,
        "flowz.width": width,
    }
    with _tracer().start_as_current_span(f"gather {name}", attributes=attributes):
        return _current_context()


def outcome(status: str, error: BaseException | None = None) -> None:
    """Say how the current attempt's span ended: succeeded, failed, suspended, retrying."""
    if not enabled():
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    span.set_attribute("flowz.status", status)
    if error is not None:
        span.record_exception(error)
        span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))
