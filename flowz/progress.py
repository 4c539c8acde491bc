"""The live progress view: a rich tree of a run, live in a terminal or in Jupyter, or as lines.

The view is an event subscriber (`view(event)`); the state lives in a pure model.

Examples:
    >>> await crawl.run(urls)                  # shows the view live
    >>> await crawl.run(urls, progress=False)  # or FLOWZ_PROGRESS=0
"""

from __future__ import annotations

import importlib
import io
import math
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ._events import (
    ChildFinished,
    ChildrenScheduled,
    Event,
    RunFinished,
    RunResumed,
    RunStarted,
    RunSuspended,
    StepFinished,
    StepRetried,
)
from ._progress_model import GatherLine, ProgressModel, RunNode, StepLine
from ._runs import JournalInfo, RunInfo
from ._serde import abbreviated, dumps, shortened
from ._types import JSON

__all__ = [
    "LiveTree",
    "ProgressView",
    "print_journal",
    "print_runs",
    "print_tree",
    "render_failures",
    "render_tree",
]

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_MARKS = {"succeeded": "[green]✓[/]", "failed": "[red]✗[/]", "cancelled": "[yellow]⊘[/]"}
_MAX_CHILD_RUNS = 8  # workflow children shown under a gather line
# A notebook frame is a message to the browser: at most this often, but always when the
# run's shape changes (started, scheduled, suspended, finished).
_JUPYTER_FRAME_SECONDS = 0.25
_SHAPE_EVENTS = (RunStarted, RunResumed, RunSuspended, RunFinished, ChildrenScheduled)
_HTML_FRAME = (
    '<pre style="white-space:pre;overflow-x:auto;line-height:normal;'
    "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">{code}</pre>"
)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{seconds % 60:02.0f}s"


def _count(n: int, noun: str) -> str:
    plural = {"child": "children", "retry": "retries"}.get(noun, noun + "s")
    return f"{n} {noun if n == 1 else plural}"


def _mark(status: str, now: float) -> str:
    if status in _MARKS:
        return _MARKS[status]
    if status == "retrying":
        return "[yellow]↻[/]"
    if status in ("waiting", "sleeping", "pending"):
        return "[blue]⏸[/]"
    return f"[cyan]{_SPINNER[int(now * 10) % len(_SPINNER)]}[/]"


def _elapsed(start: float | None, end: float | None, now: float) -> str:
    return "" if start is None else _duration((end or now) - start)


def _step_label(line: StepLine, now: float) -> Text:
    parts = [f"{_mark(line.status, now)} {line.name}"]
    if line.status == "retrying":
        parts.append(f"[yellow]attempt {line.attempt}[/]")
    elif line.attempt > 1:
        parts.append(f"[yellow]after {line.attempt} attempts[/]")
    if line.replayed:
        parts.append("[dim]replayed[/]")
    else:
        parts.append(f"[dim]{_elapsed(line.started, line.finished, now)}[/]")
    if line.has_output:
        parts.append(f"[dim]→ {escape(abbreviated(line.output))}[/]")
    return Text.from_markup(" ".join(parts))


def _gather_label(line: GatherLine, now: float, owner_status: str) -> Table:
    row = Table.grid(padding=(0, 1))
    if line.finished:
        mark = _mark("failed" if line.failed else "cancelled" if line.cancelled else "succeeded", 0)
    elif owner_status in _MARKS:
        mark = _mark(owner_status, now)  # its run ended: no spinner on what will never run
    else:
        mark = _mark("running", now)
    counts = f"{line.done}/{line.total}"
    if line.failed:
        counts += f" · [red]{line.failed} failed[/]"
    if line.cancelled:
        counts += f" · [yellow]{line.cancelled} cancelled[/]"
    if line.retries:
        counts += f" · [yellow]{_count(line.retries, 'retry')}[/]"
    if line.done and not line.finished:
        counts += f" · {line.rate(now):.1f}/s"
    row.add_row(
        Text.from_markup(f"{mark} {line.name} ×{line.total}"),
        ProgressBar(total=max(line.total, 1), completed=line.done, width=24),
        Text.from_markup(counts),
    )
    return row


def _add_run(tree: Tree, model: ProgressModel, node: RunNode, now: float) -> None:
    for position in sorted(node.items):
        line = node.items[position]
        if isinstance(line, StepLine):
            tree.add(_step_label(line, now))
            continue
        branch = tree.add(_gather_label(line, now, node.status))
        shown = [model.runs[c] for c in line.children if c in model.runs]
        # Running children first: they are what a user wants to see.
        shown.sort(key=lambda n: n.status in _MARKS)
        for child in shown[:_MAX_CHILD_RUNS]:
            _add_run(branch.add(_run_label(child, now, model.root_id)), model, child, now)
        if len(shown) > _MAX_CHILD_RUNS:
            branch.add(f"[dim]… {len(shown) - _MAX_CHILD_RUNS} more[/]")
    if node.waiting_for is not None and node.status == "waiting":
        until = ""
        if node.sleeping_until:
            until = " until " + datetime.fromtimestamp(node.sleeping_until).strftime("%H:%M:%S")
        tree.add(Text(f"⏸ waiting for a message on {node.waiting_for!r}{until}", style="blue"))
    elif node.status == "sleeping" and node.sleeping_until:
        wake = datetime.fromtimestamp(node.sleeping_until).strftime("%H:%M:%S")
        tree.add(Text.from_markup(f"[blue]⏾ sleeping until {wake}[/]"))


def _run_label(node: RunNode, now: float, root_id: str = "") -> Text:
    status = f"[bold]{node.status}[/]" if node.status != "running" else node.status
    shown_id = node.id.removeprefix(root_id) if root_id and node.id != root_id else node.id
    return Text.from_markup(
        f"{_mark(node.status, now)} [bold]{node.name}[/] [dim]{shown_id}[/] {status} "
        f"[dim]{_elapsed(node.started, node.finished, now)}[/]"
    )


def render_tree(model: ProgressModel, now: float | None = None) -> RenderableType:
    """The tree of the model's run, as rich renders it."""
    now = time.time() if now is None else now
    root = model.root
    if root is None:
        return Text(f"waiting for run {model.root_id} to start…", style="dim")
    tree = Tree(_run_label(root, now))
    _add_run(tree, model, root, now)
    if model.events:
        shown = ", ".join(
            f"{name}={abbreviated(value, 40)}" for name, value in model.events.items()
        )
        tree.add(Text(f"events: {shown}", style="dim"))
    return tree


def _arguments(stored: JSON, limit: int = 60) -> str:
    """`i=10, url="https://…"`: a call's stored arguments, cut to `limit` characters."""
    if not isinstance(stored, dict):
        return abbreviated(stored, limit)
    return shortened(", ".join(f"{name}={dumps(value)}" for name, value in stored.items()), limit)


def render_failures(model: ProgressModel, limit: int | None = 5) -> RenderableType | None:
    """The failed executions of the run (the first `limit`, and how many more), or None."""
    failures = model.failures
    if not failures:
        return None
    lines = [Text(f"{len(failures)} failed:", style="red")]
    for failure in failures if limit is None else failures[:limit]:
        index = "" if failure.child_index is None else f" #{failure.child_index}"
        attempts = f" · {_count(failure.attempts, 'attempt')}" if failure.attempts > 1 else ""
        line = Text()
        line.append("  ✗ ", style="red")
        line.append(f"{failure.name}{index}", style="bold")
        line.append(f" ({_arguments(failure.input)}) ", style="dim")
        line.append(f"{failure.error_type}: {failure.message}")
        line.append(attempts, style="dim")
        lines.append(line)
    if limit is not None and len(failures) > limit:
        more = len(failures) - limit
        lines.append(Text(f"  … {more} more: flowz show {model.root_id} --failed", style="dim"))
    return Group(*lines)


def _summary_line(model: ProgressModel, status: str, now: float) -> Text:
    root = model.root
    totals = model.totals
    wall = _elapsed(root.started, root.finished or now, now) if root else ""
    children = _count(totals.children, "child")
    ended_badly = [
        f"{n} {what}"
        for n, what in ((totals.failed, "failed"), (totals.cancelled, "cancelled"))
        if n
    ]
    if ended_badly:
        children += f" ({', '.join(ended_badly)})"
    return Text.from_markup(
        f"{_mark(status, now)} [bold]{status}[/] in {wall} · {_count(totals.steps, 'step')}"
        f" · {children} · {_count(totals.retries, 'retry')}"
    )


class _Frame:
    """One drawing of a renderable for Jupyter: HTML for the notebook, text for the rest."""

    def __init__(self, renderable: RenderableType, width: int) -> None:
        console = Console(
            record=True,
            width=width,
            file=io.StringIO(),
            force_terminal=True,
            force_jupyter=False,
            color_system="truecolor",
        )
        console.print(renderable)
        self.text = console.export_text(clear=False)
        self.html = console.export_html(inline_styles=True, code_format=_HTML_FRAME)

    def _repr_mimebundle_(self, include: object = None, exclude: object = None) -> dict[str, str]:
        return {"text/plain": self.text, "text/html": self.html}


class ProgressView:
    """Shows one run's progress: live in a terminal or a notebook, else plain lines.

    Args:
        run_id: the run to show (events of other runs are ignored); or set it with follow().
        console: where to draw (default: standard error).
        mode: "live" (a terminal), "jupyter" (one notebook output, redrawn in place),
            "final" (drawn once at the end) or "lines"; default from the console.
        clock: the time source, injectable for tests.
    """

    def __init__(
        self,
        run_id: str = "",
        *,
        console: Console | None = None,
        mode: str | None = None,
        clock: Callable[[], float] = time.time,
        auto_refresh: bool = True,
    ) -> None:
        self.console = console or Console(stderr=True)
        if mode is None:
            if self.console.is_jupyter:
                mode = "jupyter"
            else:
                mode = "live" if self.console.is_terminal else "lines"
        self.mode = mode
        self.model = ProgressModel(run_id)
        self._clock = clock
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._auto_refresh = auto_refresh
        self._last_line: dict[tuple[str, int], int] = {}
        self._display: Any = None  # IPython's DisplayHandle, in "jupyter" mode
        self._drawn_at = -math.inf

    def follow(self, run_id: str, model: ProgressModel | None = None) -> None:
        """Show this run (a view made before the run's id was known).

        `model` is the run's stored state, for a run that resumes: children that
        ended before count as ended, and events are folded in from there.
        """
        with self._lock:
            self.model = model or ProgressModel(run_id)

    def __rich__(self) -> RenderableType:
        with self._lock:
            return render_tree(self.model, self._clock())

    def __enter__(self) -> ProgressView:
        if self.mode == "jupyter":
            # IPython is there (the console saw Jupyter); it ships no type hints.
            display: Callable[..., Any] = importlib.import_module("IPython.display").display
            self._display = display(self._frame(), display_id=True)
            self._drawn_at = time.monotonic()
            return self
        if self.mode != "live" and self.model.root_id:
            # The live tree shows the id at its top; elsewhere (CI logs, pipes, Jupyter's
            # final tree) this line is the only way to find an unnamed run again.
            self.console.print(f"flowz run {self.model.root_id}", markup=False, highlight=False)
        if self.mode == "live":
            self._live = Live(
                self,
                console=self.console,
                auto_refresh=self._auto_refresh,
                refresh_per_second=8,
                transient=False,
            )
            self._live.start()
        return self

    def _frame(self) -> _Frame:
        return _Frame(self, self.console.width)

    def _redraw_notebook(self, event: Event | None) -> None:
        """Draw the notebook output again: on a change of shape, at most 4 times a second."""
        now = time.monotonic()
        if (
            event is None
            or isinstance(event, _SHAPE_EVENTS)
            or (now - self._drawn_at >= _JUPYTER_FRAME_SECONDS)
        ):
            self._drawn_at = now
            self._display.update(self._frame())

    def __exit__(self, *exc_info: object) -> None:
        if self._display is not None:
            self._redraw_notebook(None)
            self._display = None
        if self._live is not None:
            self._live.update(self, refresh=True)
            self._live.stop()
            self._live = None

    def __call__(self, event: Event) -> None:
        """Subscriber entry point: fold the event in (and print a line in "lines" mode)."""
        with self._lock:
            self.model.apply(event)
        if self.mode == "lines":
            self._print_line(event)
        elif self._display is not None:
            self._redraw_notebook(event)
        elif self._live is not None and not self._auto_refresh:
            self._live.update(self)

    def _print_line(self, event: Event) -> None:
        text: str | None = None
        if isinstance(event, StepFinished) and not event.replayed:
            text = f"{'✓' if event.ok else '✗'} {event.name} (attempt {event.attempt})"
        elif isinstance(event, StepRetried):
            text = f"↻ {event.name} attempt {event.attempt} failed: {event.error}"
        elif isinstance(event, ChildrenScheduled) and not event.replayed:
            text = f"→ {event.name} ×{event.count} scheduled"
        elif isinstance(event, ChildFinished):
            line = self._gather(event.parent_id, event.position)
            if line is not None:
                # A line per tenth of the gather, and one at the end.
                step = max(1, line.total // 10)
                key = (event.parent_id, event.position)
                if line.done == line.total or line.done // step > self._last_line.get(key, 0):
                    self._last_line[key] = line.done // step
                    failed = f", {line.failed} failed" if line.failed else ""
                    text = f"  {line.name} {line.done}/{line.total} done{failed}"
        elif isinstance(event, RunSuspended) and event.reason != "children" and event.until:
            wake = datetime.fromtimestamp(event.until).strftime("%H:%M:%S")
            text = f"⏾ {event.execution_id} sleeping until {wake}"
        if text is not None:
            self.console.print(text, markup=False, highlight=False)

    def _gather(self, parent_id: str, position: int) -> GatherLine | None:
        node = self.model.runs.get(parent_id)
        line = node.items.get(position) if node else None
        return line if isinstance(line, GatherLine) else None

    def summary(self, status: str, outcome: str | None = None) -> None:
        """Print the final tree (unless live shows it), the failed executions, a summary line.

        `status` is how the run ended; `outcome` a line under it (a failed run's error).
        A result is not repeated here: the caller prints or returns it.
        """
        now = self._clock()
        lines: list[RenderableType] = []
        if self.mode == "final":
            lines.append(render_tree(self.model, now))
        failures = render_failures(self.model)
        if failures is not None:
            lines.append(failures)
        lines.append(_summary_line(self.model, status, now))
        if outcome is not None:
            shown = outcome if len(outcome) <= 300 else outcome[:297] + "..."
            lines.append(Text(shown, style="dim"))
        self.console.print(Group(*lines))


def print_tree(model: ProgressModel, *, all_failures: bool = False) -> None:
    """Print a run's tree once, and its failed executions (`flowz show`)."""
    console = Console(highlight=False)
    console.print(render_tree(model))
    failures = render_failures(model, None if all_failures else 5)
    if failures is not None:
        console.print(failures)


def print_runs(runs: Sequence[RunInfo]) -> None:
    """Print runs (`flowz list`): a table in a terminal, tab-separated lines when piped."""
    console = Console(highlight=False)
    lines = []
    for run in runs:
        created = run.created.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        duration = f"{(run.ended - run.created).total_seconds():.2f}s" if run.ended else ""
        lines.append((run.id, run.name, run.status.value, created, duration))
    if not console.is_terminal:  # whole ids, one run per line, for scripts
        for line in lines:
            print("\t".join(line))
        return
    table = Table("workflow", "status", "started", "duration")
    table.add_column("id", overflow="fold")
    for run_id, *rest in lines:
        table.add_row(*rest, run_id)
    console.print(table)


def print_journal(entries: Sequence[JournalInfo]) -> None:
    """Print a journal (`flowz journal`): a table in a terminal, tab-separated when piped."""
    console = Console(highlight=False)
    lines = []
    for e in entries:
        duration = "" if e.duration is None else f"{e.duration:.3f}s"
        value = shortened(dumps(e.error if e.error is not None else e.result), 60)
        attempts = "" if e.attempts <= 1 else str(e.attempts)
        lines.append((str(e.position), e.kind, e.name, e.status, attempts, duration, value))
    if not console.is_terminal:
        for line in lines:
            print("\t".join(line))
        return
    table = Table("pos", "kind", "name", "status", "attempts", "duration", "result or error")
    for line in lines:
        table.add_row(*map(escape, line))
    console.print(table)


def _tree_and_notes(model: ProgressModel, note: str | None) -> RenderableType:
    parts = [render_tree(model)]
    failures = render_failures(model)
    if failures is not None:
        parts.append(failures)
    if note is not None:
        parts.append(Text(note, style="yellow"))
    return Group(*parts)


class LiveTree:
    """A run's tree redrawn in place as its model is replaced (`flowz watch`).

    `note`: a line under the tree (why the run waits). Without a terminal (piped,
    a CI log) nothing is redrawn: the last tree is printed once, at the end.
    """

    def __init__(self, model: ProgressModel, note: str | None = None) -> None:
        self._console = Console(highlight=False)
        self._shown = _tree_and_notes(model, note)
        self._live = Live(self._shown, console=self._console) if self._console.is_terminal else None

    def __enter__(self) -> LiveTree:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()
        else:
            self._console.print(self._shown)

    def update(self, model: ProgressModel, note: str | None = None) -> None:
        """Draw this state of the run."""
        self._shown = _tree_and_notes(model, note)
        if self._live is not None:
            self._live.update(self._shown, refresh=True)
