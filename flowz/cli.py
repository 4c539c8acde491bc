"""The `flowz` command line (typer). Thin: each command calls the public API or a store."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import typer

from . import __version__
from ._client import Client, follow_stream, message
from ._config import Settings, parse_duration, parse_moment, redacted_url
from ._decorators import WorkflowFunction
from ._ids import new_run_id
from ._logging import configure as configure_logging
from ._progress_model import ProgressModel
from ._queues import Schedule
from ._registry import Registry, default_registry
from ._runs import RunInfo
from ._serde import error_fields, error_line, iso_time
from ._types import Status
from ._waiting import live_workers, queue_state, why_waiting
from ._worker import serve
from .errors import (
    ConfigError,
    FlowzError,
    NotAWorkflowError,
    RunNotFoundError,
    StoreError,
    UsageError,
)
from .store import Store, open_store, upgrade_schema
from .store._protocol import ExecutionRow, QueueRow, WorkerRow

__all__ = ["app", "main"]

T = TypeVar("T")
_ENDED = {Status.SUCCEEDED.value, Status.FAILED.value, Status.CANCELLED.value}

app = typer.Typer(
    name="flowz",
    help="Durable workflows that feel like plain async Python.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Manage the database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
schedules_app = typer.Typer(
    help="List cron schedules (next and last tick); pause or resume one.",
    invoke_without_command=True,
)
app.add_typer(schedules_app, name="schedules")

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db", envvar="FLOWZ_DATABASE_URL", help="Database URL (sqlite:/// or postgresql://)."
    ),
]
RunId = Annotated[str, typer.Argument(help="The run id.")]


class RunFailedError(FlowzError):
    """The workflow run ended in failure."""


@dataclass
class _Options:
    """Options of the `flowz` command itself, for every subcommand."""

    verbose: bool = False


_options = _Options()


def _settings(db: str | None, **overrides: Any) -> Settings:
    settings = Settings.from_env(database_url=db, **overrides)
    if _options.verbose:
        typer.echo(f"flowz: database {redacted_url(settings.database_url)}", err=True)
    return settings


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False))


def _run_json(row: ExecutionRow, waiting: str | None = None) -> dict[str, Any]:
    """A run as `--json` prints it."""
    out: dict[str, Any] = {
        "id": row.id,
        "workflow": row.name,
        "status": row.status,
        "queue": row.queue,
        "created_at": iso_time(row.created_at),
        "started_at": iso_time(row.started_at),
        "finished_at": iso_time(row.finished_at),
    }
    if row.status == Status.SUCCEEDED:
        out["result"] = row.output
    if row.error:
        error_type, message = error_fields(row.error)
        out["error"] = {"type": error_type, "message": message}
    if waiting is not None:
        out["waiting"] = waiting
    return out


def _with_store(
    settings: Settings, use: Callable[[Store], Awaitable[T]], *, create: bool = False
) -> T:
    """Run `use` on the database; only `create=True` (the worker) may make a new one."""

    async def main() -> T:
        store = await open_store(settings, create=create)
        try:
            return await use(store)
        finally:
            await store.aclose()

    return anyio.run(main)


def _with_client(settings: Settings, use: Callable[[Client], Awaitable[T]]) -> T:
    """Run `use` with a client of an existing database."""

    async def main() -> T:
        async with Client(settings=settings, create=False) as client:
            return await use(client)

    return anyio.run(main)


def load_module(spec: str) -> str:
    """Import a dotted module or a .py file so its decorated functions register; its name."""
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec).resolve()
        if not path.is_file():
            raise UsageError(f"no such file: {spec}")
        # Imported under its file name, the journal name a script run as __main__ uses.
        sys.path.insert(0, str(path.parent))
        spec = path.stem
    elif str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise UsageError(
                f"cannot import {spec!r}: no such module (run from the folder that holds it, "
                "or give the path to its .py file)"
            ) from exc
        raise UsageError(f"cannot import {spec!r}: {exc}") from exc
    except Exception as exc:
        raise UsageError(f"importing {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    return spec


def _load_attribute(target: str, what: str) -> object:
    """`module:attr` or `path/to/file.py:attr` to the object."""
    module, sep, attr = target.rpartition(":")
    if not sep or not module or not attr:
        raise UsageError(f"{target!r}: write MODULE:{what}, like pipeline:{what.lower()}")
    name = load_module(module)
    obj = getattr(sys.modules[name], attr, None)
    if obj is None:
        raise UsageError(f"module {name!r} has no attribute {attr!r}")
    return obj


def load_workflow(target: str) -> WorkflowFunction[Any, Any]:
    """`module:workflow` or `path/to/file.py:workflow` to the decorated workflow."""
    obj = _load_attribute(target, "WORKFLOW")
    if not isinstance(obj, WorkflowFunction):
        raise NotAWorkflowError(
            f"{target} is not a workflow: decorate it with @flowz.workflow ({obj!r})"
        )
    return obj


def _json_argument(raw: str, option: str) -> Any:
    """The JSON of an option's value, or of the file it names with @."""
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"{option} {raw}: cannot read the file: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from exc


def parse_input(
    raw: str | None, wf: WorkflowFunction[Any, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """--input JSON (or @file.json): a list is positional, an object keyword arguments."""
    value: Any = [] if raw is None else _json_argument(raw, "--input")
    if isinstance(value, list):
        args, kwargs = tuple(value), {}
    elif isinstance(value, dict):
        args, kwargs = (), value
    else:
        args, kwargs = (value,), {}
    return wf.definition.codec.validate_args(args, kwargs)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowz {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Say which database the command uses (on standard error)."
        ),
    ] = False,
) -> None:
    """Durable workflows that feel like plain async Python."""
    _options.verbose = verbose


InputOption = Annotated[
    str | None,
    typer.Option(
        "--input",
        "-i",
        help="Arguments as JSON: a list (positional) or an object; @file.json reads a file.",
    ),
]
IdOption = Annotated[
    str | None, typer.Option("--id", help="Run id; the same id never starts a second run.")
]
Target = Annotated[str, typer.Argument(help="MODULE:WORKFLOW, MODULE dotted or a .py path.")]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document instead of text.")
]


@app.command()
def run(
    target: Target,
    input: InputOption = None,
    id: IdOption = None,
    db: DbOption = None,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No live view (also FLOWZ_PROGRESS=0).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run a workflow to completion here, showing its progress, and print its result as JSON.

    With --json, print the run instead: id, status, and result or error.

    Example: flowz run examples/quickstart.py:fan --input '[1000]'
    """
    wf = load_workflow(target)
    args, kwargs = parse_input(input, wf)
    settings = _settings(db)
    run_id = id or new_run_id()

    async def main() -> tuple[Any, ExecutionRow | None, Exception | None]:
        async with Client(settings=settings) as client:
            chosen = wf.options(id=run_id, progress=False if no_progress else None)
            try:
                result, failure = await client.run(chosen, *args, **kwargs), None
            except (UsageError, StoreError):
                raise  # the command's input or the database: one line from main()
            except Exception as exc:  # the workflow's own error
                result, failure = None, exc
            return result, await client.store.get_execution(run_id) if as_json else None, failure

    result, row, failure = anyio.run(main)
    if row is not None:
        _echo_json(_run_json(row))
    if failure is not None:
        raise RunFailedError(
            f"the run failed: {type(failure).__name__}: {failure}{_where(failure)}"
        ) from failure
    if row is None:
        typer.echo(json.dumps(wf.definition.codec.dump_result(result)))


def _where(exc: BaseException) -> str:
    """' (in step fetch, file.py:12)': the last frame of the remote traceback, if any."""
    for note in getattr(exc, "__notes__", []):
        frames = [line.strip() for line in note.splitlines() if line.strip().startswith("File ")]
        if frames:
            return f"\n  where: {frames[-1]}"
    return ""


@app.command()
def start(
    target: Target, input: InputOption = None, id: IdOption = None, db: DbOption = None
) -> None:
    """Enqueue a run for the workers and print its id (does not wait)."""
    wf = load_workflow(target)
    args, kwargs = parse_input(input, wf)
    settings = _settings(db)

    async def main() -> str:
        async with Client(settings=settings) as client:
            return (await client.start(wf.options(id=id), *args, **kwargs)).id

    typer.echo(anyio.run(main))


@app.command()
def worker(
    modules: Annotated[
        list[str], typer.Argument(help="Modules (dotted, or .py paths) whose functions to run.")
    ],
    db: DbOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            envvar="FLOWZ_CONCURRENCY", help="How many executions to run at once (default: 64)."
        ),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(
            envvar="FLOWZ_QUEUE",
            help="Take work from this queue only (default: 'default' and every queue the "
            "modules' functions name).",
        ),
    ] = None,
    registry: Annotated[
        str | None,
        typer.Option(
            envvar="FLOWZ_REGISTRY",
            help="MODULE:ATTR of a flowz.Registry to serve instead of the default one.",
        ),
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            envvar="FLOWZ_LOG_FORMAT",
            help="text, or json: one object per line with run_id, execution_id and step.",
        ),
    ] = "text",
) -> None:
    """Run workflows and steps from MODULES until SIGINT or SIGTERM.

    Example: FLOWZ_DATABASE_URL=postgresql://host/db flowz worker pipeline
    """
    configure_logging(log_format)
    for module in modules:
        load_module(module)
    served = default_registry() if registry is None else _load_registry(registry)
    settings = _settings(db, concurrency=concurrency, queue=queue)
    _with_store(settings, lambda store: serve(store, served, settings), create=True)


def _load_registry(target: str) -> Registry:
    obj = _load_attribute(target, "REGISTRY")
    if not isinstance(obj, Registry):
        raise UsageError(f"--registry {target}: {obj!r} is not a flowz.Registry")
    return obj


async def _run_row(store: Store, run_id: str) -> ExecutionRow:
    row = await store.get_execution(run_id)
    if row is None:
        raise RunNotFoundError(f"no run with id {run_id!r}: see `flowz list`")
    return row


async def _queued_reason(store: Store, row: ExecutionRow, lease_seconds: float) -> str | None:
    """Why a run no worker has started yet waits, or None if it started."""
    if row.status != Status.PENDING or row.started_at is not None:
        return None
    return await why_waiting(store, row, lease_seconds) or "waiting for a free worker"


async def _row_and_reason(
    store: Store, run_id: str, lease_seconds: float
) -> tuple[ExecutionRow, str | None]:
    """The run, and why it waits: for a worker to start it, or for a message."""
    row = await _run_row(store, run_id)
    if row.started_at is None:
        return row, await _queued_reason(store, row, lease_seconds)
    if row.status not in (Status.PENDING, Status.WAITING):
        return row, None
    journal = await store.read_journal(run_id)
    last = journal[max(journal)] if journal else None
    if last is None or last.kind != "recv" or last.status != "waiting":
        return row, await _children_held(store, row, lease_seconds)
    until = "" if row.status == Status.WAITING else f" until {iso_time(row.run_at)}"
    return row, f"waiting for a message on {last.name!r}{until}: flowz send {run_id} ..."


async def _children_held(store: Store, row: ExecutionRow, lease_seconds: float) -> str | None:
    """For a run waiting on children: what holds its pending ones (a queue's limit)."""
    if row.status != Status.WAITING:
        return None
    live = await live_workers(store, lease_seconds)
    held = {
        queue.limits.name: state
        for queue in await store.list_queues()
        if (state := queue_state(queue, live))
    }
    if not held:  # the common case: no tree read (`flowz watch` asks at every change)
        return None
    pending = {r.queue for r in await store.list_executions(row.root_id) if r.status == "pending"}
    reasons = [state for name, state in held.items() if name in pending]
    return f"children wait: {'; '.join(reasons)}" if reasons else None


@app.command()
def status(run_id: RunId, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Print a run's status, and its result or error once it ended.

    Exit code: 0 succeeded, 1 failed or cancelled, 2 not finished yet.
    """
    settings = _settings(db)
    row, reason = _with_store(
        settings, lambda store: _row_and_reason(store, run_id, settings.lease_seconds)
    )
    if as_json:
        _echo_json(_run_json(row, reason))
    else:
        line = f"{row.id}  {row.name}  {row.status}"
        if row.status == Status.SUCCEEDED:
            line += f"  result: {json.dumps(row.output)[:200]}"
        elif row.error:
            line += f"  error: {error_line(row.error)}"[:300]
        elif reason is not None:
            line += f"  ({reason})" if row.started_at else f"  (queued: {reason})"
        typer.echo(line)
    if row.status != Status.SUCCEEDED:
        raise typer.Exit(1 if row.status in _ENDED else 2)


@app.command("list")
def list_runs(
    db: DbOption = None,
    status: Annotated[
        str | None, typer.Option(help="Only runs with this status (several: failed,cancelled).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Only runs of this workflow (its journal name).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Created since: how long ago (1d, 12h) or a date-time.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Created before: how long ago (1d, 12h) or a date-time.")
    ] = None,
    parent: Annotated[
        str | None, typer.Option(help="The children of this run instead of top-level runs.")
    ] = None,
    limit: Annotated[int, typer.Option(help="How many runs at most.")] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="Go on after an earlier page (printed under it).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List the newest runs: a table in a terminal, one tab-separated line each when piped.

    Piped, a line is: id, workflow, status, created, duration (so `cut -f1` gives ids).
    When there are more, the cursor of the next page is printed to stderr.
    """
    statuses = None if status is None else [s.strip() for s in status.split(",")]
    known = {s.value for s in Status}
    for value in statuses or ():
        if value not in known:
            raise UsageError(f"--status {value!r}: use one of {', '.join(sorted(known))}")
    page = _with_client(
        _settings(db),
        lambda client: client.list_runs(
            status=statuses,
            name=name,
            since=parse_moment(since, "--since"),
            until=parse_moment(until, "--until"),
            parent=parent,
            limit=limit,
            cursor=cursor,
        ),
    )
    if as_json:
        _echo_json([_info_json(run) for run in page])
    else:
        from .progress import print_runs

        print_runs(page.runs)
    if page.next_cursor is not None:
        typer.echo(f"more runs: repeat the command with --cursor {page.next_cursor}", err=True)


def _info_json(run: RunInfo) -> dict[str, Any]:
    """A run as `flowz list --json` prints it."""
    out: dict[str, Any] = {
        "id": run.id,
        "workflow": run.name,
        "status": run.status.value,
        "kind": run.kind.value,
        "queue": run.queue,
        "parent": run.parent,
        "attempts": run.attempts,
        "created_at": run.created.isoformat(),
        "started_at": None if run.started is None else run.started.isoformat(),
        "finished_at": None if run.ended is None else run.ended.isoformat(),
    }
    if run.error_type is not None:
        out["error"] = {"type": run.error_type, "message": run.error_message}
    return out


@app.command()
def journal(run_id: RunId, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Print a workflow run's journal: each durable call by position, what it returned.

    The positions are the ones `flowz fork RUN --at N` takes.
    """
    entries = _with_client(_settings(db), lambda client: client.journal(run_id))
    if as_json:
        _echo_json(
            [
                {
                    "position": e.position,
                    "kind": e.kind,
                    "name": e.name,
                    "status": e.status,
                    "attempts": e.attempts,
                    "started_at": None if e.started is None else e.started.isoformat(),
                    "duration": e.duration,
                    "result": e.result,
                    "error": e.error,
                }
                for e in entries
            ]
        )
        return
    from .progress import print_journal

    print_journal(entries)


@app.command()
def fork(
    run_id: RunId,
    at: Annotated[
        int, typer.Option("--at", help="The first journal position to run again (flowz journal).")
    ],
    id: IdOption = None,
    db: DbOption = None,
) -> None:
    """Start a new run of an ended run, replaying its journal before --at, and print its id.

    From position --at on, the workflow's code as it is now runs (a worker that
    imports it). The original run is not changed.
    """
    handle = _with_client(_settings(db), lambda client: client.fork(run_id, at=at, id=id))
    typer.echo(handle.id)


async def _model(store: Store, run_id: str) -> ProgressModel:
    await _run_row(store, run_id)
    return await ProgressModel.load(store, run_id)


@app.command()
def show(
    run_id: RunId,
    db: DbOption = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="List every failed execution, not the first 5.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show a run's journal and children as a tree, outputs truncated, and what failed, why."""
    model = _with_store(_settings(db), lambda store: _model(store, run_id))
    if as_json:
        _echo_json(model.as_json())
        return
    from .progress import print_tree

    print_tree(model, all_failures=failed)


@app.command()
def watch(run_id: RunId, db: DbOption = None) -> None:
    """Follow a run executing on any worker, live, until it ends."""
    from .progress import LiveTree

    settings = _settings(db)

    async def look(store: Store) -> tuple[ProgressModel, str | None]:
        # A message wait is drawn in the tree; a run no worker took yet, or children a
        # queue's limit holds back, only here.
        row = await _run_row(store, run_id)
        reason = await _queued_reason(store, row, settings.lease_seconds)
        if reason is None:
            reason = await _children_held(store, row, settings.lease_seconds)
        return await ProgressModel.load(store, run_id), reason

    async def follow(store: Store) -> None:
        mark = store.change_mark()  # before the read: a change after it wakes the wait
        model, reason = await look(store)
        with LiveTree(model, reason) as live:
            while model.root is None or model.root.status not in _ENDED:
                await store.wait_for_change(0.5, mark)
                mark = store.change_mark()
                model, reason = await look(store)
                live.update(model, reason)

    _with_store(settings, follow)


@app.command()
def send(
    run_id: RunId,
    topic: Annotated[str, typer.Argument(help="The topic the workflow receives on.")],
    value: Annotated[
        str, typer.Option("--value", help="The message, as JSON; @file.json reads a file.")
    ] = "null",
    key: Annotated[
        str | None,
        typer.Option("--key", help="Idempotency key: the same key twice stores one message."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Send a message to a running workflow (its `flowz.recv(TOPIC)` gets it).

    Example: flowz send order-7 approval --value '{"approved": true}'
    """
    text = _json_argument(value, "--value")

    async def deliver(store: Store) -> bool:
        return await store.send_message(run_id, topic, message(topic, text, key), key)

    if _with_store(_settings(db), deliver):
        typer.echo(f"{run_id}: sent on {topic!r}")
    else:
        typer.echo(f"{run_id}: already delivered with --key {key}: nothing stored")


@app.command()
def events(run_id: RunId, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Print the latest value of each event the run has set (`flowz.set_event`)."""

    async def read(store: Store) -> dict[str, Any]:
        await _run_row(store, run_id)
        return await store.get_events(run_id)

    found = _with_store(_settings(db), read)
    if as_json:
        _echo_json(found)
        return
    for name, value in found.items():
        typer.echo(f"{name}\t{json.dumps(value, ensure_ascii=False)}")


@app.command()
def stream(
    run_id: RunId,
    name: Annotated[str, typer.Argument(help="The stream's name.")],
    db: DbOption = None,
) -> None:
    """Print a run's stream and follow it until it is closed or the run ends (like tail -f).

    One value per line: strings as they are, other values as JSON.
    """
    settings = _settings(db)

    async def follow(store: Store) -> None:
        await _run_row(store, run_id)
        async for value in follow_stream(store, run_id, name, settings.poll_seconds):
            typer.echo(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))

    _with_store(settings, follow)


@app.command()
def cancel(run_id: RunId, db: DbOption = None) -> None:
    """Cancel a run and its subtree: pending children never start, running ones stop."""
    cancelled = _with_store(_settings(db), lambda store: store.cancel_run(run_id))
    typer.echo(f"{run_id}: {cancelled} execution(s) cancelled")


@app.command()
def retry(run_id: RunId, db: DbOption = None) -> None:
    """Make a failed run pending again; a worker resumes it (completed work is kept)."""

    async def again(store: Store) -> bool:
        row = await _run_row(store, run_id)
        if not await store.retry_run(run_id):
            raise UsageError(f"run {run_id!r} is {row.status}; only a failed run can be retried")
        return True

    _with_store(_settings(db), again)
    typer.echo(f"{run_id}: pending again; a worker that imports its module resumes it")


@app.command()
def ui(
    db: DbOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; beyond this machine it needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8700,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Hide cancel, retry, fork, send and pause.")
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="FLOWZ_UI_TOKEN",
            help="A secret every request must carry (?token= once, or a Bearer header).",
        ),
    ] = None,
) -> None:
    """Serve the live web dashboard: runs, a run's tree, workers, queues and schedules.

    Example: flowz ui --db postgresql://localhost/app   (then open http://127.0.0.1:8700)
    """
    from ._ui._serve import check_binding, require_ui_extra, serve_ui

    require_ui_extra()
    check_binding(host, token)
    settings = _settings(db)
    _with_store(settings, lambda store: store.schema_version())  # one clear line if it is not
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    typer.echo(
        f"flowz ui: http://{shown}:{port}  ({redacted_url(settings.database_url)}"
        f"{', read-only' if read_only else ''}); Ctrl-C stops it",
        err=True,
    )
    serve_ui(settings, host=host, port=port, read_only=read_only, token=token)


@app.command()
def info(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Say which database the commands use, its schema, and the live workers."""
    from .store._sql import SCHEMA_VERSION

    settings = _settings(db)

    async def look(store: Store) -> tuple[int | None, list[WorkerRow]]:
        return await store.schema_version(), await live_workers(store, settings.lease_seconds)

    schema, live = _with_store(settings, look)
    now = time.time()
    if as_json:
        _echo_json(
            {
                "flowz": __version__,
                "database": redacted_url(settings.database_url),
                "schema": schema,
                "workers": [
                    {
                        "id": w.id,
                        "host": w.host,
                        "pid": w.pid,
                        "queue": w.queue,
                        "names": list(w.names),
                        "heartbeat_at": iso_time(w.heartbeat_at),
                    }
                    for w in live
                ],
            }
        )
        return
    typer.echo(f"flowz     {__version__}")
    typer.echo(f"database  {redacted_url(settings.database_url)}")
    typer.echo(f"schema    v{schema} (this flowz: v{SCHEMA_VERSION})")
    typer.echo(f"workers   {len(live)} live")
    for w in live:
        typer.echo(
            f"  {w.id}  queues {w.queue.replace(',', ', ')}  {len(w.names)} functions  "
            f"heartbeat {now - w.heartbeat_at:.0f} s ago"
        )


@app.command()
def replay(
    modules: Annotated[
        list[str], typer.Argument(help="Modules (dotted, or .py paths) with the workflows' code.")
    ],
    run: Annotated[
        list[str] | None, typer.Option("--run", help="A run id to check (repeat for more).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Runs created since: how long ago (1d) or a date-time.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs at most.")] = 1000,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check recorded runs against the code in MODULES before you deploy it.

    Each run's journal is replayed with the current workflow code: no step runs and
    nothing is written. Exit code 1 if a run would fail with NonDeterminismError
    (both calls are named), 0 if all replay.

    Example: flowz replay shop.orders --since 7d
    """
    for module in modules:
        load_module(module)
    from .testing import replay as replay_runs

    report = _with_client(
        _settings(db),
        lambda client: replay_runs(
            client, runs=run or (), name=name, since=parse_moment(since, "--since"), limit=limit
        ),
    )
    if as_json:
        _echo_json(
            [
                {"id": r.run_id, "workflow": r.name, "status": r.status, "problem": r.problem}
                for r in report.results
            ]
        )
    else:
        for result in report.failures:
            typer.echo(f"{result.run_id} ({result.name}, {result.status}): {result.problem}")
        typer.echo(
            f"{len(report.results)} workflow execution(s) checked, {len(report.failures)} "
            "would not replay"
        )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def queues(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List queues: their limits, what runs and waits in them, and what holds the waiting.

    A queue at its limit says so (`at its limit: 3/3 running`, `at its rate`), apart
    from a queue that no live worker takes.
    """
    settings = _settings(db)

    async def look(store: Store) -> tuple[list[QueueRow], list[WorkerRow]]:
        return await store.list_queues(), await live_workers(store, settings.lease_seconds)

    rows, live = _with_store(settings, look)
    listed = [
        {
            "queue": q.limits.name,
            "concurrency": q.limits.concurrency,
            "per_worker": q.limits.per_worker,
            "rate": None
            if q.limits.rate_limit is None
            else {"limit": q.limits.rate_limit, "per": q.limits.rate_period},
            "per_partition": q.limits.per_partition,
            "running": q.running,
            "waiting": q.waiting,
            "held_by": queue_state(q, live),
        }
        for q in rows
    ]
    if as_json:
        _echo_json(listed)
        return
    if not rows:
        typer.echo("no queue is defined and no work is queued")
    for q, shown in zip(rows, listed, strict=True):
        limits = [
            f"{label} {value}"
            for label, value in (
                ("concurrency", q.limits.concurrency),
                ("per worker", q.limits.per_worker),
                ("per partition", q.limits.per_partition),
            )
            if value is not None
        ]
        if q.limits.rate_limit is not None:
            limits.append(f"rate {q.limits.rate_limit}/{q.limits.rate_period:g}s")
        line = f"{q.limits.name}  {', '.join(limits) or 'no limits'}  running {q.running}  "
        line += f"waiting {q.waiting}"
        if shown["held_by"]:
            line += f"  ({shown['held_by']})"
        typer.echo(line)


@schedules_app.callback()
def schedules(ctx: typer.Context, db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the cron schedules workers have stored, with their last and next tick."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _with_store(_settings(db), lambda store: store.list_schedules())
    listed = []
    for row in rows:
        schedule = Schedule(row.cron, row.timezone, row.catch_up)  # type: ignore[arg-type]
        upcoming = schedule.next_tick(row.last_tick)
        listed.append(
            {
                "name": row.name,
                "cron": row.cron,
                "timezone": row.timezone,
                "catch_up": row.catch_up,
                "paused": row.paused,
                "last_tick": iso_time(row.last_tick),
                "next_tick": None if row.paused else upcoming.isoformat(),
            }
        )
    if as_json:
        _echo_json(listed)
        return
    if not listed:
        typer.echo("no schedule: start a worker that imports a @workflow(schedule=...)")
    for s in listed:
        state = "paused" if s["paused"] else f"next {s['next_tick']}"
        typer.echo(
            f"{s['name']}  '{s['cron']}' {s['timezone']}  catch-up {s['catch_up']}  "
            f"last {s['last_tick'] or '-'}  {state}"
        )


ScheduleName = Annotated[str, typer.Argument(help="The scheduled workflow's journal name.")]


@schedules_app.command("pause")
def schedules_pause(name: ScheduleName, db: DbOption = None) -> None:
    """Pause a schedule: its ticks pass without runs until it is resumed."""
    _pause(name, True, db)
    typer.echo(f"{name}: paused")


@schedules_app.command("resume")
def schedules_resume(name: ScheduleName, db: DbOption = None) -> None:
    """Resume a schedule from its next tick (ticks that passed while paused do not run)."""
    _pause(name, False, db)
    typer.echo(f"{name}: resumed")


def _pause(name: str, paused: bool, db: str | None) -> None:
    async def change(store: Store) -> None:
        if not await store.pause_schedule(name, paused):
            known = ", ".join(s.name for s in await store.list_schedules()) or "none"
            raise UsageError(
                f"no schedule named {name!r} (schedules: {known}): see `flowz schedules`"
            )

    _with_store(_settings(db), change)


@db_app.command("prune")
def db_prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Delete runs that ended longer ago than this: 30d, 12h, 1w."
        ),
    ],
    status: Annotated[
        str, typer.Option(help="Only runs with these statuses, comma-separated.")
    ] = "succeeded,failed,cancelled",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Delete ended runs with their children, journals, messages, events and streams.

    Runs that have not ended are never touched. Deletes in small transactions, so
    workers keep running meanwhile; the variable FLOWZ_RETENTION makes workers do it.
    """
    try:
        age = dt.timedelta(seconds=parse_duration(older_than, "--older-than"))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    statuses = [s.strip() for s in status.split(",") if s.strip()]
    count = _with_client(
        _settings(db), lambda client: client.prune(age, status=statuses, dry_run=dry_run)
    )
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {count} run(s) that ended more than {older_than} ago")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Create the schema, or bring an older one to this version of flowz."""
    from .store._sql import SCHEMA_VERSION

    done = anyio.run(upgrade_schema, _settings(db))
    for line in done:
        typer.echo(line)
    typer.echo(f"schema at v{SCHEMA_VERSION}" + ("" if done else ": nothing to do"))


def main() -> None:
    """Entry point of the `flowz` command: flowz errors become one line and exit code 1."""
    try:
        app()  # usage errors: typer prints them and exits 2
    except FlowzError as exc:
        typer.echo(f"flowz: {exc}", err=True)
        sys.exit(1)
