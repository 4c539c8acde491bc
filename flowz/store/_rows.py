"""Conversions between database rows and the protocol's dataclasses, shared by the stores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._serde import dumps, loads
from .._types import JSON
from ._protocol import ExecutionRow, JournalEntry, NewExecution

__all__ = [
    "EXECUTION_COLUMNS",
    "JOURNAL_COLUMNS",
    "dumps_or_none",
    "execution_row",
    "journal_entry",
    "journal_params",
    "new_execution_params",
]

#: The columns of flowz_executions, in ExecutionRow's field order.
EXECUTION_COLUMNS = (
    "id, root_id, parent_id, position, child_index, kind, name, input, output, error, status, "
    "attempt, max_attempts, run_at, queue, priority, lease_owner, lease_expires_at, "
    "created_at, updated_at, started_at, finished_at"
)
#: The columns of flowz_journal that journal_params fills, in its order.
JOURNAL_COLUMNS = (
    "execution_id, position, kind, name, status, output, error, attempt, started_at, finished_at"
)


def dumps_or_none(value: JSON) -> str | None:
    """JSON text, or None for SQL NULL."""
    return None if value is None else dumps(value)


def execution_row(r: Sequence[Any]) -> ExecutionRow:
    """An ExecutionRow from a row selected as EXECUTION_COLUMNS."""
    values = list(r[:22])
    values[7:10] = [loads(v) for v in values[7:10]]  # input, output, error
    return ExecutionRow(*values)


def journal_entry(r: Sequence[Any]) -> JournalEntry:
    """A JournalEntry from a row selected as JOURNAL_COLUMNS without execution_id."""
    return JournalEntry(r[0], r[1], r[2], r[3], loads(r[4]), loads(r[5]), r[6], r[7], r[8])


def journal_params(execution_id: str, e: JournalEntry) -> tuple[Any, ...]:
    """The values of JOURNAL_COLUMNS for one entry."""
    return (
        execution_id,
        e.position,
        e.kind,
        e.name,
        e.status,
        dumps_or_none(e.output),
        dumps_or_none(e.error),
        e.attempt,
        e.started_at,
        e.finished_at,
    )


def new_execution_params(e: NewExecution) -> tuple[Any, ...]:
    """The insert values of a new execution.

    In order: id, root_id, parent_id, position, child_index, kind, name, input,
    max_attempts, run_at, queue, priority.
    """
    return (
        e.id,
        e.root_id,
        e.parent_id,
        e.position,
        e.child_index,
        e.kind,
        e.name,
        dumps(e.input),
        e.max_attempts,
        e.run_at,
        e.queue,
        e.priority,
    )
