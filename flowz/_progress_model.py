"""The progress view's state: events (or database rows) folded into a tree. No rich here."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._events import (
    ChildFinished,
    ChildrenScheduled,
    Event,
    EventSet,
    RunFinished,
    RunResumed,
    RunStarted,
    RunSuspended,
    StepFinished,
    StepRetried,
    StepStarted,
)
from ._serde import error_fields, error_line, iso_time
from ._types import JSON, Status
from .store._protocol import ExecutionRow, JournalEntry, Store

__all__ = ["Failure", "GatherLine", "ProgressModel", "RunNode", "StepLine"]


@dataclass
class StepLine:
    """An inline step (or a durable helper) of a workflow."""

    name: str
    status: str  #: running | retrying | succeeded | failed
    attempt: int
    started: float | None
    finished: float | None = None
    replayed: bool = False
    output: JSON = None  #: the stored result, when read from the database
    has_output: bool = False
    error: JSON = None  #: the stored error record of the last failed attempt


@dataclass
class GatherLine:
    """Children scheduled at one position, shown as one line with counts."""

    name: str
    total: int
    started: float
    done: int = 0  #: ended, however they ended
    failed: int = 0
    cancelled: int = 0
    retries: int = 0  #: attempts beyond the first, over the ended children
    last_done: float | None = None
    children: list[str] = field(default_factory=list)  #: workflow children, by id

    @property
    def finished(self) -> bool:
        """Whether every child ended."""
        return self.done >= self.total

    def rate(self, now: float) -> float:
        """Children ended per second since the line started (until the last one ended)."""
        end = self.last_done if self.finished and self.last_done is not None else now
        elapsed = end - self.started
        return self.done / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class Failure:
    """A failed execution of the tree: what ran, with what, and why it failed."""

    id: str
    name: str
    child_index: int | None
    input: JSON  #: the stored arguments, by parameter name
    error_type: str  #: the short name: `ValueError`
    message: str
    attempts: int
    traceback: str = ""  #: as the worker that ran it formatted it


@dataclass
class RunNode:
    """A workflow execution: the root run or a workflow child."""

    id: str
    name: str
    status: str
    started: float | None
    finished: float | None = None
    error: str | None = None  #: `Type: message`
    error_record: JSON = None  #: as stored, when read from the database
    waiting_for: str | None = None  #: the topic of the message it waits for
    sleeping_until: float | None = None
    items: dict[int, StepLine | GatherLine] = field(default_factory=dict)


def _parent_position(child_id: str) -> int:
    return int(child_id.rsplit("/", 2)[1])


@dataclass
class Totals:
    """What the summary line counts."""

    steps: int = 0
    children: int = 0
    failed: int = 0  #: children
    cancelled: int = 0  #: children
    retries: int = 0  #: inline steps' and children's


class ProgressModel:
    """Folds engine events into the tree the view renders; one model per watched run."""

    def __init__(self, root_id: str) -> None:
        self.root_id = root_id
        self.runs: dict[str, RunNode] = {}
        #: Failed executions below the root, oldest first (known once loaded from the store).
        self.failures: list[Failure] = []
        #: The watched run's events (`flowz.set_event`), latest values.
        self.events: dict[str, JSON] = {}

    @property
    def root(self) -> RunNode | None:
        """The watched run, once it started."""
        return self.runs.get(self.root_id)

    def _in_tree(self, execution_id: str) -> bool:
        return execution_id == self.root_id or execution_id.startswith(self.root_id + "/")

    def apply(self, event: Event) -> None:
        """Update the tree with one event (events of other runs are ignored)."""
        if isinstance(event, ChildFinished):
            self._child_finished(event)
            return
        if isinstance(event, EventSet):
            if event.execution_id == self.root_id:
                self.events[event.name] = event.value
            return
        execution_id = str(getattr(event, "execution_id", None) or getattr(event, "parent_id", ""))
        if not self._in_tree(execution_id):
            return
        if isinstance(event, RunStarted):
            started = self.runs.setdefault(
                event.execution_id, RunNode(event.execution_id, event.name, "running", event.at)
            )
            started.status = "running"
            if event.parent_id in self.runs:
                line = self.runs[event.parent_id].items.get(_parent_position(event.execution_id))
                if isinstance(line, GatherLine) and event.execution_id not in line.children:
                    line.children.append(event.execution_id)
            return
        node = self.runs.get(execution_id)
        if node is None:
            if not isinstance(event, RunResumed):
                return
            node = self.runs[execution_id] = RunNode(execution_id, event.name, "running", event.at)
        if isinstance(event, RunResumed):
            node.status, node.sleeping_until, node.waiting_for = "running", None, None
        elif isinstance(event, RunSuspended):
            node.status = "waiting" if event.reason in ("children", "message") else "sleeping"
            node.sleeping_until, node.waiting_for = event.until, event.topic
        elif isinstance(event, RunFinished):
            node.status = "succeeded" if event.ok else "failed"
            node.finished, node.error = event.at, event.error
        elif isinstance(event, StepStarted):
            node.items[event.position] = StepLine(event.name, "running", event.attempt, event.at)
        elif isinstance(event, StepRetried):
            line = node.items.get(event.position)
            if isinstance(line, StepLine):
                line.status, line.attempt = "retrying", event.attempt + 1
        elif isinstance(event, StepFinished):
            line = node.items.get(event.position)
            if event.replayed and isinstance(line, StepLine) and line.finished is not None:
                return  # seen running in this process: keep its real attempt and duration
            if not isinstance(line, StepLine):
                line = node.items[event.position] = StepLine(event.name, "", event.attempt, None)
            line.status = "succeeded" if event.ok else "failed"
            line.attempt, line.finished, line.replayed = event.attempt, event.at, event.replayed
        elif isinstance(event, ChildrenScheduled) and event.position not in node.items:
            node.items[event.position] = GatherLine(event.name, event.count, event.at)

    def _child_finished(self, event: ChildFinished) -> None:
        parent = self.runs.get(event.parent_id)
        line = parent.items.get(event.position) if parent else None
        if isinstance(line, GatherLine):
            line.done += 1
            line.failed += not event.ok
            line.retries += max(event.attempt - 1, 0)
            line.last_done = event.at

    @property
    def totals(self) -> Totals:
        """Counts over the whole tree, for the summary line."""
        totals = Totals()
        for node in self.runs.values():
            for line in node.items.values():
                if isinstance(line, StepLine):
                    totals.steps += 1
                    totals.retries += line.attempt - 1  # a retrying line counts the coming attempt
                else:
                    totals.children += line.total
                    totals.failed += line.failed
                    totals.cancelled += line.cancelled
                    totals.retries += line.retries
        return totals

    def as_json(self) -> dict[str, JSON]:
        """The tree as plain JSON (`flowz show --json`): times in ISO 8601, UTC."""
        root = self.root
        tree: dict[str, JSON] = (
            {"id": self.root_id, "status": "unknown"} if root is None else self._node_json(root)
        )
        tree["failures"] = [
            {
                "id": f.id,
                "name": f.name,
                "child_index": f.child_index,
                "input": f.input,
                "error": {"type": f.error_type, "message": f.message},
                "attempts": f.attempts,
            }
            for f in self.failures
        ]
        return tree

    def _node_json(self, node: RunNode) -> dict[str, JSON]:
        items: list[JSON] = []
        for position in sorted(node.items):
            line = node.items[position]
            if isinstance(line, StepLine):
                step: dict[str, JSON] = {
                    "position": position,
                    "kind": "step",
                    "name": line.name,
                    "status": line.status,
                    "attempts": line.attempt,
                    "started_at": iso_time(line.started),
                    "finished_at": iso_time(line.finished),
                }
                if line.has_output:
                    step["output"] = line.output
                items.append(step)
            else:
                items.append(
                    {
                        "position": position,
                        "kind": "children",
                        "name": line.name,
                        "total": line.total,
                        "ended": line.done,
                        "failed": line.failed,
                        "cancelled": line.cancelled,
                        "retries": line.retries,
                        "started_at": iso_time(line.started),
                        "runs": [
                            self._node_json(self.runs[c]) for c in line.children if c in self.runs
                        ],
                    }
                )
        return {
            "id": node.id,
            "name": node.name,
            "status": node.status,
            "started_at": iso_time(node.started),
            "finished_at": iso_time(node.finished),
            "error": _error_json(node),
            "items": items,
        }

    @classmethod
    async def load(cls, store: Store, root_id: str) -> ProgressModel:
        """The run's tree as the database holds it now (one read per workflow's journal)."""
        rows = await store.list_executions(root_id)
        journals = {r.id: await store.read_journal(r.id) for r in rows if r.kind == "workflow"}
        model = cls.from_rows(root_id, rows, journals)
        model.events = await store.get_events(root_id) if rows else {}
        return model

    @classmethod
    def from_rows(
        cls, root_id: str, rows: list[ExecutionRow], journals: dict[str, dict[int, JournalEntry]]
    ) -> ProgressModel:
        """The same tree, built from the database (`flowz watch`, `flowz show`)."""
        model = cls(root_id)
        by_parent: dict[tuple[str, int], list[ExecutionRow]] = {}
        for row in rows:
            if row.parent_id is not None and row.position is not None:
                by_parent.setdefault((row.parent_id, row.position), []).append(row)
        for row in rows:
            if row.kind != "workflow":
                continue
            status = row.status
            if status == "pending" and row.started_at is not None:
                status = "sleeping"
            node = RunNode(row.id, row.name, status, row.started_at, row.finished_at)
            node.sleeping_until = row.run_at if status == "sleeping" else None
            if row.error:
                node.error, node.error_record = error_line(row.error), row.error
            for position, entry in sorted(journals.get(row.id, {}).items()):
                if entry.kind in ("schedule", "gather"):
                    children = by_parent.get((row.id, position), [])
                    node.items[position] = _gather_from_rows(entry, children)
                elif entry.kind == "sleep":
                    continue
                elif entry.kind == "recv" and entry.status == "waiting":
                    if row.status in ("waiting", "pending"):  # not yet woken and running
                        node.waiting_for, node.status = entry.name, "waiting"
                elif entry.kind in ("recv", "send", "event", "stream", "first", "cancel", "patch"):
                    continue
                else:
                    status = "retrying" if entry.status == "retrying" else entry.status
                    step = StepLine(entry.name, status, entry.attempt, entry.started_at)
                    step.finished = entry.finished_at
                    step.output, step.has_output = entry.output, entry.status == "succeeded"
                    step.error = entry.error
                    node.items[position] = step
            model.runs[row.id] = node
        model.failures = [
            _failure(row) for row in rows if row.status == "failed" and row.id != root_id
        ]
        return model


def _error_json(node: RunNode) -> JSON:
    if node.error_record is not None:
        error_type, message = error_fields(node.error_record)
        return {"type": error_type, "message": message}
    return None if node.error is None else {"type": "error", "message": node.error}


def _failure(row: ExecutionRow) -> Failure:
    error_type, message = error_fields(row.error)
    trace = str(row.error.get("traceback") or "") if isinstance(row.error, dict) else ""
    return Failure(
        row.id, row.name, row.child_index, row.input, error_type, message, row.attempt, trace
    )


def _gather_from_rows(entry: JournalEntry, children: list[ExecutionRow]) -> GatherLine:
    ended = [c for c in children if Status(c.status).is_terminal]
    # Journals older than the gather's start time fall back on the children's creation.
    started = entry.started_at or min((c.created_at for c in children), default=0.0)
    line = GatherLine(entry.name, len(children), started)
    line.done = len(ended)
    line.failed = sum(c.status == "failed" for c in ended)
    line.cancelled = sum(c.status == "cancelled" for c in ended)
    line.retries = sum(max(c.attempt - 1, 0) for c in children)
    line.last_done = max((c.finished_at or c.updated_at for c in ended), default=None)
    line.children = [c.id for c in children if c.kind == "workflow"]
    return line
