"""The progress view: the model folded from events, the rich tree, and plain lines."""

from __future__ import annotations

import io

import anyio
import pytest
from rich.console import Console

import flowz
from flowz import gather_durable, step, workflow
from flowz._events import ChildFinished, ChildrenScheduled, RunFinished, RunStarted, StepFinished
from flowz._progress_model import GatherLine, ProgressModel, StepLine, Totals
from flowz.progress import ProgressView, render_tree
from flowz.testing import temp_client

attempts: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _reset_attempts() -> None:
    attempts.clear()


@step(retries=1, retry_delay=0.01)
async def warm_up(tag: str) -> str:
    attempts[tag] = attempts.get(tag, 0) + 1
    if attempts[tag] == 1:
        raise ConnectionError("cold")
    return tag


@step
async def double(x: int) -> int:
    if x == 7:
        raise ValueError("seven")
    return 2 * x


@workflow
async def pipeline(n: int) -> int:
    await warm_up(f"w{n}")
    values = await gather_durable(*(double(i) for i in range(n)), return_exceptions=True)
    return sum(v for v in values if isinstance(v, int))


def recording_console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=terminal, width=100, color_system=None)
    return console, buffer


def test_the_live_tree_shows_steps_retries_and_one_line_per_gather(database_url: str) -> None:
    console, buffer = recording_console(terminal=True)
    view = ProgressView(console=console, mode="live", auto_refresh=False)
    assert flowz.run(pipeline.options(id="live", progress=view), 200) == 2 * sum(range(200)) - 14
    text = buffer.getvalue()
    final = text[text.rindex("✓ tests.test_progress:pipeline live") :]
    assert "✓ tests.test_progress:pipeline live succeeded" in final
    assert "tests.test_progress:warm_up" in final and "after 2 attempts" in final
    assert "tests.test_progress:double ×200" in final and "200/200 · 1 failed" in final
    assert "━" in final  # the bar
    assert "✓ succeeded in" in final and "1 step · 200 children (1 failed) · 1 retry" in final
    tree, failures = final.split("1 failed:\n")
    assert tree.count("double") == 1, "a gather is one line, not one per child"
    assert "double #7 (x=7) ValueError: seven" in failures


def test_without_a_terminal_the_view_prints_plain_lines(database_url: str) -> None:
    console, buffer = recording_console(terminal=False)
    view = ProgressView(console=console)
    assert view.mode == "lines"
    flowz.run(pipeline.options(id="plain", progress=view), 20)
    lines = buffer.getvalue().splitlines()
    assert "↻ tests.test_progress:warm_up attempt 1 failed: ConnectionError('cold')" in lines
    assert "→ tests.test_progress:double ×20 scheduled" in lines
    assert "  tests.test_progress:double 20/20 done, 1 failed" in lines
    assert not any("\x1b[" in line for line in lines), "no terminal control codes"


def test_progress_can_be_switched_off(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    flowz.run(pipeline.options(progress=False), 5)
    monkeypatch.setenv("FLOWZ_PROGRESS", "0")
    flowz.run(pipeline, 5)
    assert capsys.readouterr().err == ""


def test_the_model_folds_events_and_ignores_other_runs() -> None:
    model = ProgressModel("r")
    model.apply(RunStarted("r", "wf", None, 1.0))
    model.apply(RunStarted("other", "wf", None, 1.0))
    model.apply(StepFinished("r", 0, "s", 3, True, 2.0))
    model.apply(ChildrenScheduled("r", 1, "c", 4, 2.0))
    for i, ok in enumerate([True, False, True]):
        model.apply(ChildFinished(f"r/1/{i}", "r", 1, "c", ok, 3.0, attempt=1 + i))
    model.apply(RunFinished("r", True, None, 4.0))
    assert set(model.runs) == {"r"}
    root = model.root
    assert root is not None and root.status == "succeeded"
    step_line, gather_line = root.items[0], root.items[1]
    assert isinstance(step_line, StepLine) and step_line.attempt == 3
    assert isinstance(gather_line, GatherLine) and (gather_line.done, gather_line.failed) == (3, 1)
    assert model.totals == Totals(steps=1, children=4, failed=1, retries=2 + 0 + 1 + 2)
    console, buffer = recording_console(terminal=True)
    console.print(render_tree(model, now=5.0))
    assert "c ×4" in buffer.getvalue() and "3/4 · 1 failed" in buffer.getvalue()


def test_a_raising_subscriber_is_detached_and_the_run_goes_on(database_url: str) -> None:
    from flowz._events import EventBus

    bus = EventBus()
    seen: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("observer bug")

    bus.subscribe(broken)
    bus.subscribe(seen.append)
    bus.publish(RunStarted("r", "wf", None, 1.0))
    bus.publish(RunFinished("r", True, None, 2.0))
    assert len(seen) == 2 and broken not in bus._subscribers


def test_watch_builds_the_same_tree_from_the_database(database_url: str) -> None:
    flowz.run(pipeline.options(id="watched", progress=False), 30)

    async def model() -> ProgressModel:
        from flowz import Settings
        from flowz.cli import _model
        from flowz.store import open_store

        store = await open_store(Settings.from_env())
        try:
            return await _model(store, "watched")
        finally:
            await store.aclose()

    built = anyio.run(model)
    console, buffer = recording_console(terminal=True)
    console.print(render_tree(built))
    text = buffer.getvalue()
    assert "pipeline watched succeeded" in text and "30/30 · 1 failed" in text


blipped: set[int] = set()


@step(retries=2, retry_delay=0.01)
async def picky(x: int) -> int:
    if x == 5:
        raise ValueError(f"no {x}")
    if x % 2 and x not in blipped:
        blipped.add(x)
        raise ConnectionError("blip")
    return x


@workflow
async def napper() -> None:
    await flowz.sleep(3600)


@workflow
async def doomed(n: int) -> int:
    naps = [flowz.schedule(napper()) for _ in range(3)]  # still asleep when the run fails
    values = await gather_durable(*(picky(i) for i in range(n)))
    await flowz.wait_all(naps)
    return sum(values)


def test_the_final_view_says_which_children_failed_why_and_counts_what_was_cancelled() -> None:
    blipped.clear()
    console, buffer = recording_console(terminal=True)
    view = ProgressView(console=console, mode="live", auto_refresh=False)

    async def main() -> None:
        async with temp_client() as client:
            with pytest.raises(ValueError, match="no 5"):
                await client.run(doomed.options(id="doomed", progress=view), 5 + 1)

    anyio.run(main)
    text = buffer.getvalue()
    final = text[text.rindex("doomed failed") :]
    # Children ended by the run's end are cancelled, not failed; retries of children count.
    assert final.count("napper ×1 ━━━━━━━━━━━━━━━━━━━━━━━━ 1/1 · 1 cancelled") == 3
    assert "picky ×6 ━━━━━━━━━━━━━━━━━━━━━━━━ 6/6 · 1 failed · 4 retries" in final
    # 2 retries of blips, 2 of the child that failed after 3 attempts.
    assert "✗ failed in" in final and "9 children (1 failed, 3 cancelled) · 4 retries" in final
    assert "1 failed:" in final
    assert "tests.test_progress:picky #5 (x=5) ValueError: no 5 · 3 attempts" in final
    last_frame = final[: final.index("1 failed:")]
    assert not any(c in last_frame for c in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"), "a failed run's tree has no spinner"


def test_a_gather_read_from_the_database_has_its_start_time(database_url: str) -> None:
    flowz.run(pipeline.options(id="rated", progress=False), 10)

    async def model() -> ProgressModel:
        async with flowz.Client() as client:
            return await ProgressModel.load(client.store, "rated")

    built = anyio.run(model)
    root = built.root
    assert root is not None and root.started is not None
    gather = root.items[1]
    assert isinstance(gather, GatherLine)
    # Not 0.0 (the epoch), which made `flowz watch` show 0.0/s.
    assert abs(gather.started - root.started) < 60
    assert gather.finished and gather.rate(now=gather.started + 3600) > 1, "ended children/s"
