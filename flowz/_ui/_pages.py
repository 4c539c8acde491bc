"""What each dashboard page shows: read through the client, rendered by Jinja2 (escaped)."""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlencode

import jinja2

from .._client import Client
from .._config import parse_moment
from .._progress_model import GatherLine, ProgressModel, StepLine
from .._queues import Schedule
from .._runs import RunInfo, RunPage, run_info
from .._serde import error_line
from .._types import JSON, Status
from .._waiting import live_workers, queue_state, why_waiting
from ..errors import FlowzError, RunNotFoundError, UsageError
from ..store._protocol import ExecutionRow, JournalEntry

__all__ = [
    "RunView",
    "RunsFilter",
    "load_run",
    "queues_fragment",
    "render",
    "run_fragments",
    "runs_fragments",
    "workers_fragment",
]

#: Workflow children drawn inside a gather on a run page; the rest are a link away.
SHOWN_CHILDREN = 20
#: Journals read for one run page at most (the root's and the drawn children's).
JOURNALS_READ = 60
#: Failed executions listed on a run's failures page (the rest are a filtered list away).
FAILURES_SHOWN = 200
#: Characters of a value shown before it is cut (the full value is on the child's page).
VALUE_CHARS = 2000
NOTHING = "\N{EN DASH}"  #: what an empty cell shows
ENDED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("flowz._ui", "templates"),
        autoescape=True,  # every value user data reaches a page through is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when,
        ago=_ago,
        seconds=_seconds,
        value=_value,
        error_line=error_line,
        traceback=_traceback,
    )
    env.tests["step_line"] = lambda item: isinstance(item, StepLine)
    env.tests["gather_line"] = lambda item: isinstance(item, GatherLine)
    env.globals.update(STATUSES=[s.value for s in Status])
    return env


def render(template: str, **context: Any) -> str:
    """A template of templates/ rendered with `context`."""
    return _environment().get_template(template).render(**context)


# -- filters ------------------------------------------------------------------
def _when(moment: _dt.datetime | float | None) -> str:
    if moment is None:
        return NOTHING
    if isinstance(moment, float | int):
        moment = _dt.datetime.fromtimestamp(moment, _dt.UTC)
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(moment: _dt.datetime | float | None) -> str:
    if moment is None:
        return NOTHING
    epoch = moment.timestamp() if isinstance(moment, _dt.datetime) else moment
    return _seconds(time.time() - epoch) + " ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return NOTHING
    value = max(value, 0.0)
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def _value(value: JSON) -> str:
    text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + " …"


def _traceback(record: JSON) -> str:
    return str(record.get("traceback") or "") if isinstance(record, dict) else ""


# -- runs -----------------------------------------------------------------------
@dataclass(frozen=True)
class RunsFilter:
    """The runs page's filters, from its query string."""

    status: str = ""
    name: str = ""
    since: str = ""
    parent: str = ""
    cursor: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> RunsFilter:
        return cls(**{k: query.get(k, "").strip() for k in cls.__dataclass_fields__})

    def query(self, **changes: str) -> str:
        """This filter as a query string, with `changes`; empty values left out."""
        values = {k: getattr(self, k) for k in self.__dataclass_fields__} | changes
        return urlencode({k: v for k, v in values.items() if v})


async def runs_fragments(client: Client, filters: RunsFilter) -> dict[str, str]:
    """The live parts of the runs page: the counts and the table."""
    if filters.status and filters.status not in {s.value for s in Status}:
        raise UsageError(
            f"status {filters.status!r}: use one of {', '.join(s.value for s in Status)}"
        )
    since = parse_moment(filters.since or None, "since")
    common: dict[str, Any] = {
        "name": filters.name or None,
        "since": since,
        "parent": filters.parent or None,
    }
    counts = await client.count_runs(**common)
    page: RunPage = await client.list_runs(
        status=filters.status or None, limit=50, cursor=filters.cursor or None, **common
    )
    context = {
        "filters": filters,
        "counts": counts,
        "page": page,
        "total": sum(counts.values()),
    }
    return {
        "counts": render("_counts.html", **context),
        "table": render("_runs_table.html", **context),
    }


# -- a run ------------------------------------------------------------------------
@dataclass
class RunView:
    """Everything the run page shows of one execution and its tree."""

    row: ExecutionRow
    info: RunInfo
    model: ProgressModel | None  #: the tree, for a workflow
    reason: str | None  #: why it waits, if it waits
    events: dict[str, JSON]
    journal: list[JournalEntry]


async def load_run(client: Client, run_id: str, lease_seconds: float) -> RunView:
    """The run page's data: the tree's rows in one read, and at most JOURNALS_READ journals."""
    store = client.store
    row = await store.get_execution(run_id)
    if row is None:
        raise RunNotFoundError(f"no run with id {run_id!r}: search the runs page by id")
    model = None
    journal: dict[int, JournalEntry] = {}
    if row.kind == "workflow":
        rows = [r for r in await store.list_executions(row.root_id) if _within(r.id, run_id)]
        journals = await _journals(client, run_id, rows)
        journal = journals.get(run_id, {})
        model = ProgressModel.from_rows(run_id, rows, journals)
    reason = None
    if row.status == Status.PENDING and row.started_at is None:
        reason = await why_waiting(store, row, lease_seconds)
    events = await store.get_events(run_id) if row.parent_id is None else {}
    return RunView(row, run_info(row), model, reason, events, [journal[p] for p in sorted(journal)])


def _within(execution_id: str, root_id: str) -> bool:
    return execution_id == root_id or execution_id.startswith(root_id + "/")


async def _journals(
    client: Client, run_id: str, rows: list[ExecutionRow]
) -> dict[str, dict[int, JournalEntry]]:
    """The journals of the run and of the first workflow children of each of its gathers."""
    by_parent: dict[str, list[ExecutionRow]] = {}
    for r in rows:
        if r.parent_id is not None and r.kind == "workflow":
            by_parent.setdefault(r.parent_id, []).append(r)
    journals: dict[str, dict[int, JournalEntry]] = {}
    todo = [run_id]
    while todo and len(journals) < JOURNALS_READ:
        current = todo.pop(0)
        journals[current] = await client.store.read_journal(current)
        per_position: dict[int | None, int] = {}
        for child in by_parent.get(current, []):
            shown = per_position.get(child.position, 0)
            if shown < SHOWN_CHILDREN:
                per_position[child.position] = shown + 1
                todo.append(child.id)
    return journals


def run_fragments(view: RunView, *, read_only: bool, csrf: str) -> dict[str, str]:
    """The live parts of a run page: its header (status, result, actions) and its tree."""
    context = {
        "view": view,
        "row": view.row,
        "info": view.info,
        "read_only": read_only,
        "csrf": csrf,
        "ended": view.info.status in ENDED,
        "failed_children": len(view.model.failures) if view.model else 0,
        "now": time.time(),
        "SHOWN_CHILDREN": SHOWN_CHILDREN,
        "model": view.model,
    }
    return {
        "header": render("_run_header.html", **context),
        "tree": render("_run_tree.html", **context),
    }


# -- workers, queues, schedules ------------------------------------------------
async def workers_fragment(client: Client, lease_seconds: float) -> str:
    """The workers table: every registered worker, live or not, and what each runs."""
    store = client.store
    workers = sorted(await store.list_workers(), key=lambda w: (-w.heartbeat_at, w.id))
    running = await store.running_by_worker()
    now = time.time()
    rows = [
        {
            "worker": w,
            "live": now - w.heartbeat_at <= lease_seconds,
            "running": running.get(w.id, 0),
            "queues": w.queue.split(","),
        }
        for w in workers
    ]
    return render("_workers_table.html", rows=rows)


async def queues_fragment(
    client: Client, lease_seconds: float, *, read_only: bool, csrf: str
) -> str:
    """The queues (limits, load, what holds them) and the schedules (last and next tick)."""
    store = client.store
    live = await live_workers(store, lease_seconds)
    queues = [(q, queue_state(q, live)) for q in await store.list_queues()]
    schedules = []
    for row in await store.list_schedules():
        try:
            upcoming = Schedule(row.cron, row.timezone).next_tick(row.last_tick)
        except FlowzError:  # stored by a newer flowz, or its zone is missing here
            upcoming = None
        schedules.append({"row": row, "next": None if row.paused else upcoming})
    return render(
        "_queues_tables.html",
        queues=queues,
        schedules=schedules,
        read_only=read_only,
        csrf=csrf,
    )
