"""The dashboard's routes, in process (Starlette's TestClient): pages, escaping, actions, access."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

import flowz
from flowz import Client, Settings
from flowz._ui._app import create_app
from flowz._ui._serve import check_binding
from tests import ui_app

pytestmark = pytest.mark.timeout(120)


def settings_for(path: Path) -> Settings:
    return Settings(database_url=f"sqlite:///{path / 'ui.db'}", progress=False)


async def populate(settings: Settings) -> dict[str, str]:
    """One run in each state the pages show, by name: ids of the runs."""
    async with Client(settings=settings) as client:
        await client.run(ui_app.tidy.options(id="tidy-1"), 4)
        with pytest.raises(ValueError, match="refused"):
            await client.run(ui_app.breaks.options(id="breaks-1"), ui_app.XSS)
        await client.start(ui_app.waits.options(id="waits-1"), "go")
        async with anyio.create_task_group() as tasks:  # works on it until it waits
            tasks.start_soon(client.run, ui_app.waits.options(id="waits-1"), "go")
            while (await client.get_run("waits-1")).status != flowz.Status.WAITING:
                mark = client.store.change_mark()
                await client.store.wait_for_change(0.5, mark)
            tasks.cancel_scope.cancel()
        # Last: an in-process worker would take it (only `flowz worker` processes keep to
        # their queues).
        await client.start(ui_app.parked.options(id="parked-1"))
    return {"tidy": "tidy-1", "breaks": "breaks-1", "parked": "parked-1", "waits": "waits-1"}


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[TestClient]:
    settings = settings_for(tmp_path)
    anyio.run(populate, settings)
    with TestClient(create_app(settings)) as http:
        yield http


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no action form on the page"
    return found.group(1)


def test_runs_page_lists_every_run_with_counts_per_status(dashboard: TestClient) -> None:
    page = dashboard.get("/runs")
    assert page.status_code == 200
    for run_id in ("tidy-1", "breaks-1", "parked-1", "waits-1"):
        assert f'data-run="{run_id}"' in page.text
    counts = dict(re.findall(r'class="s-(\w+)[^"]*">\w+ <b>(\d+)</b>', page.text))
    assert counts == {"failed": "1", "pending": "1", "succeeded": "1", "waiting": "1"}
    failed = dashboard.get("/runs", params={"status": "failed"}).text
    assert 'data-run="breaks-1"' in failed and 'data-run="tidy-1"' not in failed
    named = dashboard.get("/runs", params={"name": ui_app.tidy.name}).text
    assert 'data-run="tidy-1"' in named and 'data-run="waits-1"' not in named
    children = dashboard.get("/runs", params={"parent": "tidy-1"}).text
    assert children.count('data-run="tidy-1/') == 4


def test_runs_page_pages_with_a_cursor(dashboard: TestClient, tmp_path: Path) -> None:
    async def more() -> None:
        async with Client(settings=settings_for(tmp_path)) as client:
            for i in range(60):
                await client.start(ui_app.parked.options(id=f"p-{i:02d}"))

    anyio.run(more)
    first = dashboard.get("/runs").text
    assert first.count('data-run="') == 50
    older = re.search(r'rel="next" href="\?([^"]+)"', first)
    assert older
    second = dashboard.get("/runs?" + older.group(1).replace("&amp;", "&")).text
    assert second.count('data-run="') == 14 and 'rel="next"' not in second
    assert not set(re.findall(r'data-run="([^"]+)"', first)) & set(
        re.findall(r'data-run="([^"]+)"', second)
    )


def test_bad_filters_and_unknown_ids_get_a_page_that_says_what_to_do(
    dashboard: TestClient,
) -> None:
    bad = dashboard.get("/runs", params={"status": "done"})
    assert bad.status_code == 400 and "use one of" in bad.text
    when = dashboard.get("/runs", params={"since": "yesterday"})
    assert when.status_code == 400 and "how long ago" in when.text
    missing = dashboard.get("/runs/nope")
    assert missing.status_code == 404 and "no run with id" in missing.text
    found = dashboard.get("/search", params={"id": "waits-1"}, follow_redirects=False)
    assert found.status_code == 303 and found.headers["location"] == "/runs/waits-1"
    assert dashboard.get("/search", params={"id": "zzz"}).status_code == 404


def test_user_data_is_escaped_on_every_page(dashboard: TestClient) -> None:
    """Arguments and error text holding markup show as text: no tag of theirs reaches a page."""
    escaped = "&lt;script&gt;window.__xss = 1&lt;/script&gt;"
    for path in ("/runs", "/runs/breaks-1", "/failed/breaks-1", "/runs?parent=breaks-1"):
        html = dashboard.get(path).text
        assert "<script>window.__xss" not in html, path
        assert 'onerror="window.__xss' not in html, path
        assert escaped in html or "&lt;script&gt;" in html, path


def test_run_page_shows_the_tree_results_errors_and_tracebacks(dashboard: TestClient) -> None:
    tidy = dashboard.get("/runs/tidy-1").text
    assert 'id="run-status">succeeded' in tidy
    assert 'data-gather="0"' in tidy and 'data-done="4"' in tidy
    assert '<pre class="json" id="run-result">14</pre>' in tidy
    broken = dashboard.get("/runs/breaks-1").text
    assert 'id="run-status">failed' in broken
    assert "Traceback" in broken and "ValueError" in broken
    assert "1 failed execution(s)" in broken
    failures = dashboard.get("/failed/breaks-1").text
    assert "breaks-1/1/0" in failures and "explode" in failures and "Traceback" in failures
    child = dashboard.get("/runs/breaks-1/1/0").text
    assert 'id="run-status">failed' in child and "child of" in child
    waiting = dashboard.get("/runs/waits-1").text
    assert "waits for a message on <b>go</b>" in waiting
    parked = dashboard.get("/runs/parked-1").text
    assert "Waiting: " in parked and "ui-nobody" in parked


def test_actions_cancel_retry_fork_send_behind_the_form_token(dashboard: TestClient) -> None:
    page = dashboard.get("/runs/waits-1").text
    token = csrf_of(page)
    forged = dashboard.post("/actions/cancel", data={"run": "waits-1", "csrf": "x"})
    assert forged.status_code == 403
    sent = dashboard.post(
        "/actions/send", data={"run": "waits-1", "csrf": token, "topic": "go", "value": "{"}
    )
    assert "not JSON" in sent.text
    sent = dashboard.post(
        "/actions/send",
        data={"run": "waits-1", "csrf": token, "topic": "other", "value": '{"a": 1}'},
    )
    assert "sent on" in sent.text
    cancelled = dashboard.post("/actions/cancel", data={"run": "waits-1", "csrf": token})
    assert "cancelled: 1 execution(s)" in cancelled.text
    assert 'id="run-status">cancelled' in cancelled.text
    retried = dashboard.post("/actions/retry", data={"run": "breaks-1", "csrf": token})
    assert 'id="run-status">pending' in retried.text
    again = dashboard.post("/actions/retry", data={"run": "tidy-1", "csrf": token})
    assert "only a failed run can be retried" in again.text or "is succeeded" in again.text
    forked = dashboard.post("/actions/fork", data={"run": "tidy-1", "csrf": token, "at": "1"})
    assert "forked from tidy-1 at 1" in forked.text
    assert re.search(r"<code>[0-9a-f-]{36}</code>", forked.text)


def test_read_only_hides_actions_and_refuses_them(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    anyio.run(populate, settings)
    with TestClient(create_app(settings, read_only=True)) as http:
        page = http.get("/runs/waits-1").text
        assert "read-only" in page and 'action="/actions/' not in page
        refused = http.post("/actions/cancel", data={"run": "waits-1", "csrf": "x"})
        assert refused.status_code == 403
        assert http.get("/runs/waits-1").text.count('id="run-status">waiting') == 1


def test_a_token_guards_every_request(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with TestClient(create_app(settings, token="s3cret", create=True)) as http:
        for path in ("/runs", "/workers", "/static/flowz.css", "/live/runs"):
            assert http.get(path).status_code == 401, path
        assert http.get("/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        first = http.get("/runs?token=s3cret&status=failed", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/runs?status=failed"
        assert http.get("/runs").status_code == 200  # the cookie it set
    with pytest.raises(flowz.ConfigError, match="--token"):
        check_binding("0.0.0.0", None)
    check_binding("0.0.0.0", "s3cret")
    check_binding("127.0.0.1", None)
    check_binding("::1", None)


def test_workers_and_queues_pages(dashboard: TestClient) -> None:
    assert "No worker has registered" in dashboard.get("/workers").text
    queues = dashboard.get("/queues").text
    assert "ui-nobody" in queues and "no live worker takes queue" in queues


def test_live_stream_sends_the_page_fragments(dashboard: TestClient) -> None:
    with dashboard.stream("GET", "/live/run/waits-1") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        seen: dict[str, Any] = {}
        lines = events.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                message = json.loads(line.removeprefix("data: "))
                seen[message["key"]] = message["html"]
            if len(seen) == 2:
                break
    assert set(seen) == {"header", "tree"}
    assert "waiting" in seen["header"]


def test_flowz_ui_serves_in_the_background_and_shows_an_iframe(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    anyio.run(populate, settings)
    board = flowz.ui(db=settings.database_url)
    try:
        assert board.running and board.url.startswith("http://127.0.0.1:")
        assert f'<iframe src="{board.url}/runs"' in board._repr_html_()
        with urllib.request.urlopen(board.url + "/runs", timeout=10) as page:
            assert 'data-run="tidy-1"' in page.read().decode()
        run_page = flowz.ui("tidy-1", db=settings.database_url, height=400)
        assert run_page.url == board.url  # the same server
        assert str(run_page) == f"{board.url}/runs/tidy-1"
        assert 'height="400"' in run_page._repr_html_()
    finally:
        board.stop()
    assert not board.running
