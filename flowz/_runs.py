"""What the query API returns: typed runs, journal entries and pages, built from store rows."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

from ._serde import error_fields
from ._types import JSON, Kind, Status
from .errors import UsageError
from .store._protocol import ExecutionRow, JournalEntry

__all__ = [
    "JournalInfo",
    "RunInfo",
    "RunPage",
    "decode_cursor",
    "encode_cursor",
    "journal_info",
    "run_info",
]


def _time(epoch: float | None) -> _dt.datetime | None:
    return None if epoch is None else _dt.datetime.fromtimestamp(epoch, _dt.UTC)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run (or child execution) as `Client.list_runs` and `Client.get_run` return it.

    Times are aware UTC datetimes. `attempts` counts the times a worker started it.

    Examples:
        >>> info = await client.get_run("order-7")
        >>> info.status, info.error_type
        (<Status.FAILED: 'failed'>, 'PaymentDeclined')
    """

    id: str
    name: str
    status: Status
    kind: Kind
    created: _dt.datetime
    started: _dt.datetime | None
    ended: _dt.datetime | None
    attempts: int
    #: The short name of the error's type (`ValueError`), for a failed run.
    error_type: str | None
    error_message: str | None
    #: The execution that started this one as a child; None for a top-level run.
    parent: str | None
    queue: str

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; None until it has both."""
        if self.started is None or self.ended is None:
            return None
        return (self.ended - self.started).total_seconds()


def run_info(row: ExecutionRow) -> RunInfo:
    """The RunInfo of a stored execution."""
    error_type = error_message = None
    if row.error:
        error_type, error_message = error_fields(row.error)
    created = _time(row.created_at)
    assert created is not None
    return RunInfo(
        id=row.id,
        name=row.name,
        status=Status(row.status),
        kind=Kind(row.kind),
        created=created,
        started=_time(row.started_at),
        ended=_time(row.finished_at),
        attempts=row.attempt,
        error_type=error_type,
        error_message=error_message,
        parent=row.parent_id,
        queue=row.queue,
    )


@dataclass(frozen=True, slots=True)
class JournalInfo:
    """One entry of a workflow's journal, as `Client.journal` returns it.

    `kind` is what the durable call was: step, gather, schedule, sleep, now, uuid,
    random, recv, send, event, stream, first, cancel or patch. `result` and
    `error` are the values as stored (JSON), not rebuilt into objects.
    """

    position: int
    kind: str
    name: str
    #: succeeded, failed, retrying, scheduled (children) or waiting (a recv).
    status: str
    attempts: int
    started: _dt.datetime | None
    duration: float | None
    result: JSON
    error: JSON


def journal_info(entry: JournalEntry) -> JournalInfo:
    """The JournalInfo of a stored journal entry."""
    duration = None
    if entry.started_at is not None and entry.finished_at is not None:
        duration = entry.finished_at - entry.started_at
    return JournalInfo(
        position=entry.position,
        kind=entry.kind,
        name=entry.name,
        status=entry.status,
        attempts=entry.attempt,
        started=_time(entry.started_at),
        duration=duration,
        result=entry.output,
        error=entry.error,
    )


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of `Client.list_runs`: iterate it; pass `next_cursor` for the next page.

    Examples:
        >>> page = await client.list_runs(status="failed", limit=100)
        >>> while True:
        ...     for run in page:
        ...         print(run.id, run.error_type)
        ...     if page.next_cursor is None:
        ...         break
        ...     page = await client.list_runs(status="failed", cursor=page.next_cursor)
    """

    runs: list[RunInfo]
    #: None on the last page.
    next_cursor: str | None

    def __iter__(self) -> Iterator[RunInfo]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int) -> RunInfo:
        return self.runs[index]


def encode_cursor(row: ExecutionRow) -> str:
    """An opaque cursor: the page goes on after this row."""
    raw = json.dumps([row.created_at, row.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (created_at, id) a cursor from `encode_cursor` holds."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, run_id = json.loads(raw)
        if isinstance(created_at, int | float) and isinstance(run_id, str):
            return float(created_at), run_id
    except (ValueError, binascii.Error, TypeError):
        pass
    raise UsageError(
        f"cursor {cursor!r} is not one list_runs returned: pass a page's next_cursor "
        "unchanged (and the same filters)"
    )
