"""Shared vocabulary: statuses, kinds and the JSON alias."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias

JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
"""A value made of dict, list, str, int, float, bool and None only."""


class Status(StrEnum):
    """The status of an execution (a workflow run or a child step)."""

    #: Waiting to be claimed by a worker (or sleeping while `run_at` is in the future).
    PENDING = "pending"
    #: Claimed by a worker, which holds its lease.
    RUNNING = "running"
    #: Suspended until the children it waits for end; holds no worker.
    WAITING = "waiting"
    #: Finished with a result.
    SUCCEEDED = "succeeded"
    #: Finished with an error, after its retries.
    FAILED = "failed"
    #: Stopped by a cancel.
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the status never changes again (except by an explicit retry)."""
        return self in _TERMINAL


_TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
TERMINAL_STATUSES: tuple[str, ...] = tuple(sorted(s.value for s in _TERMINAL))


class Kind(StrEnum):
    """What an execution runs."""

    WORKFLOW = "workflow"
    STEP = "step"


class EntryKind(StrEnum):
    """What a journal entry records."""

    STEP = "step"
    SCHEDULE = "schedule"
    GATHER = "gather"
    SLEEP = "sleep"
    NOW = "now"
    UUID = "uuid"
    RANDOM = "random"
    RECV = "recv"  #: a message taken (or a timeout); status "waiting" while suspended on it
    SEND = "send"
    EVENT = "event"
    STREAM = "stream"
    FIRST = "first"  #: which child a wait_first took
    CANCEL = "cancel"  #: a child the workflow cancelled
    PATCH = "patch"  #: a `flowz.patched()` that took the new code


def json_object(value: JSON) -> dict[str, JSON]:
    """`value`, which flowz stored as a JSON object (an error, a gather's or a retry's entry)."""
    if isinstance(value, dict):
        return value
    raise TypeError(f"flowz expected a stored JSON object here, found {value!r}")


def json_list(value: JSON) -> list[JSON]:
    """`value`, which flowz stored as a JSON array."""
    if isinstance(value, list):
        return value
    raise TypeError(f"flowz expected a stored JSON array here, found {value!r}")


def json_number(value: JSON) -> float:
    """`value`, which flowz stored as a number (a time, a count)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"flowz expected a stored number here, found {value!r}")
