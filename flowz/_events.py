"""Events the engine publishes while it runs, and the bus that delivers them.

Subscribers are plain callables `(Event) -> None`. One that raises is logged once
and detached: an observer can never hurt a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from ._logging import get_logger
from ._types import JSON

__all__ = [
    "ChildFinished",
    "ChildrenScheduled",
    "Event",
    "EventBus",
    "EventSet",
    "RunFinished",
    "RunResumed",
    "RunStarted",
    "RunSuspended",
    "StepFinished",
    "StepRetried",
    "StepStarted",
]

log = get_logger("flowz.events")


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A workflow execution began its first attempt."""

    execution_id: str
    name: str
    parent_id: str | None
    at: float


@dataclass(frozen=True, slots=True)
class RunResumed:
    """A workflow execution began another attempt (after a wait, sleep or crash)."""

    execution_id: str
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class RunSuspended:
    """A workflow execution released its worker: waiting for children or until a time."""

    execution_id: str
    reason: str  #: "children", "sleep", "retry" or "message"
    until: float | None
    at: float
    topic: str | None = None  #: what a "message" wait waits for


@dataclass(frozen=True, slots=True)
class RunFinished:
    """A workflow execution ended."""

    execution_id: str
    ok: bool
    error: str | None
    at: float


@dataclass(frozen=True, slots=True)
class EventSet:
    """A workflow execution set the value of one of its events (`flowz.set_event`)."""

    execution_id: str
    name: str
    value: JSON
    at: float


@dataclass(frozen=True, slots=True)
class StepStarted:
    """An inline step attempt began."""

    execution_id: str
    position: int
    name: str
    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class StepFinished:
    """An inline step ended (after its last attempt)."""

    execution_id: str
    position: int
    name: str
    attempt: int
    ok: bool
    at: float
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class StepRetried:
    """An inline step attempt failed and will be tried again."""

    execution_id: str
    position: int
    name: str
    attempt: int
    error: str
    at: float


@dataclass(frozen=True, slots=True)
class ChildrenScheduled:
    """A workflow stored children at one position (a gather or a schedule)."""

    parent_id: str
    position: int
    name: str
    count: int
    at: float
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class ChildFinished:
    """A child execution ended (seen by the worker that ran it)."""

    execution_id: str
    parent_id: str
    position: int
    name: str
    ok: bool
    at: float
    attempt: int = 1  #: the attempt that ended it


Event: TypeAlias = (
    RunStarted
    | RunResumed
    | RunSuspended
    | RunFinished
    | StepStarted
    | StepFinished
    | StepRetried
    | ChildrenScheduled
    | ChildFinished
    | EventSet
)


@dataclass
class EventBus:
    """Delivers events to subscribers, in order, synchronously."""

    _subscribers: list[Callable[[Event], None]] = field(default_factory=list)

    def subscribe(self, subscriber: Callable[[Event], None]) -> Callable[[], None]:
        """Add a subscriber; returns the function that removes it."""
        self._subscribers.append(subscriber)
        return lambda: self._detach(subscriber)

    def _detach(self, subscriber: Callable[[Event], None]) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    def publish(self, event: Event) -> None:
        """Hand `event` to every subscriber; a raising one is logged and detached."""
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("flowz: event subscriber %r raised; it is detached", subscriber)
                self._detach(subscriber)
