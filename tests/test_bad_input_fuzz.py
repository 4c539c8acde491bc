"""Whatever a user types: generated run ids, workflow and queue names, topics and JSON inputs
(unicode, NUL bytes, very long, SQL metacharacters) through the client, on both stores.

Each either works and round-trips exactly, or is refused with one clear line (a
FlowzError) and stores nothing. The SQLite file passes its integrity check after.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import flowz
from flowz import Client, Settings, workflow
from flowz.cli import app

ROOT = Path(__file__).parents[1]

pytestmark = [pytest.mark.timeout(300)]

SQL_META = ["'", '"', ";", "--", "/*", "*/", "%s", "?", "\\", "\x00", "' OR 1=1 --", "$1"]
typed = (
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=0, max_size=40
    )
    | st.sampled_from(SQL_META)
    | st.text(min_size=2000, max_size=5000)
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | typed,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(typed, inner, max_size=4),
    max_leaves=10,
)
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@workflow
async def keep(value: Any) -> Any:
    return value


def one_line(error: BaseException) -> str:
    text = str(error)
    assert isinstance(error, flowz.FlowzError), repr(error)
    assert text and "Traceback" not in text, text
    return text


@pytest.fixture
def url(database_url: str) -> Iterator[str]:
    yield database_url
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def with_client(url: str, use: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Client(settings=Settings(database_url=url, progress=False)) as client:
            await use(client)

    anyio.run(main)


@FUZZ
@given(run_id=typed, value=json_values)
def test_run_ids_and_inputs_round_trip_or_are_refused(url: str, run_id: str, value: Any) -> None:
    async def start(c: Client) -> None:
        # A NUL character cannot even be looked up on PostgreSQL (a clear StoreError).
        before = await c.store.get_execution(run_id) if run_id and "\x00" not in run_id else None
        try:
            handle = await c.start(keep.options(id=run_id), value)
        except flowz.FlowzError as exc:
            one_line(exc)
            if run_id and "\x00" not in run_id:  # refused: what was stored is unchanged
                assert await c.store.get_execution(run_id) == before
            return
        assert handle.id == run_id or not run_id
        row = await c.store.get_execution(handle.id)
        assert row is not None and row.id == handle.id
        assert row.input == {"value": value} == (before or row).input
        found = await c.list_runs(name=keep, limit=1000)
        assert handle.id in {r.id for r in found}

    with_client(url, start)


@FUZZ
@given(topic=typed, value=json_values, key=st.none() | typed)
def test_messages_with_any_topic_and_value_are_stored_or_refused(
    url: str, topic: str, value: Any, key: str | None
) -> None:
    async def send(c: Client) -> None:
        run = await c.start(keep.options(id="target"), 1)
        try:
            await c.send(run.id, topic, value, idempotency_key=key)
        except flowz.FlowzError as exc:
            one_line(exc)
            return
        if key is not None:  # the same key again stores nothing
            assert await c.send(run.id, topic, value, idempotency_key=key) is False

    with_client(url, send)


@settings(max_examples=80, deadline=None)
@given(name=typed)
def test_workflow_and_queue_names_register_or_are_refused(name: str) -> None:
    registry = flowz.Registry()
    try:

        @workflow(name=name, registry=registry)
        async def named() -> None:
            return None

    except flowz.FlowzError as exc:
        one_line(exc)
    else:
        assert named.name == name
    try:
        queue = flowz.Queue(name, concurrency=1)
    except flowz.FlowzError as exc:
        one_line(exc)
    else:
        assert queue.name == name


def test_a_nul_character_is_refused_the_same_way_on_both_stores(url: str) -> None:
    """PostgreSQL cannot store one in text; SQLite could, but runs must move between them."""
    for refused in (
        lambda: keep.options(id="order\x007"),
        lambda: keep.options(partition="tenant\x00"),
        lambda: flowz.Queue("api\x00"),
        lambda: workflow(name="a\x00b", registry=flowz.Registry())(keep.definition.fn),
    ):
        with pytest.raises(flowz.UsageError, match="NUL"):
            refused()

    async def send(c: Client) -> None:
        run = await c.start(keep.options(id="target"), 1)
        for topic, key in (("go\x00", None), ("go", "k\x00")):
            with pytest.raises(flowz.UsageError, match="NUL"):
                await c.send(run.id, topic, 1, idempotency_key=key)
        with pytest.raises(flowz.UsageError, match="NUL"):
            await c.start_many(keep, [(1,)], ids=["x\x00"])
        assert await c.count_runs() == {flowz.Status.PENDING: 1}

    with_client(url, send)


@FUZZ
@given(run_id=typed, order=typed, topic=typed)
def test_the_command_line_takes_any_id_input_and_topic_or_refuses_it(
    url: str, monkeypatch: pytest.MonkeyPatch, run_id: str, order: str, topic: str
) -> None:
    """`flowz start --id --input` then `flowz status --json` and `flowz send`, in process."""
    monkeypatch.chdir(ROOT)
    runner = CliRunner()
    started = runner.invoke(
        app, ["start", "tests.cli_app:approval", "--input", json.dumps([order]), f"--id={run_id}"]
    )
    if started.exit_code != 0:
        one_line(started.exception or AssertionError(started.output))
        return
    # The id as given (its own line endings aside: the runner's output normalizes them),
    # or a new uuid4 when none was.
    shown_id = run_id or started.output.strip()
    assert len(shown_id) == 36 or run_id
    status = runner.invoke(app, ["status", "--json", "--", shown_id])  # ids may start with -
    assert status.exit_code == 2, status.output  # pending: not finished
    shown = json.loads(status.output)
    assert shown["id"] == shown_id and shown["workflow"] == "tests.cli_app:approval"
    sent = runner.invoke(app, ["send", "--value", json.dumps(order), "--", shown_id, topic])
    if sent.exit_code != 0:
        one_line(sent.exception or AssertionError(sent.output))
