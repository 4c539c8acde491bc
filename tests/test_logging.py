"""Log records name their run, execution and step; `flowz worker --log-format json`; what the
worker says when it reaps, gives work back on shutdown, and sees work nobody knows."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowz import Client, Settings
from flowz._logging import JsonFormatter, TextFormatter, get_logger, in_step, log_context
from tests import ui_app

ROOT = Path(__file__).parents[1]


def capture(formatter: logging.Formatter) -> tuple[io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    return out, handler


def test_records_carry_the_run_execution_and_step_they_are_about() -> None:
    out, handler = capture(JsonFormatter())
    base = logging.getLogger("flowz.test")
    base.addHandler(handler)
    base.setLevel(logging.INFO)
    log = get_logger("flowz.test")
    try:
        log.info("outside")
        with log_context("order-7", "order-7/2/0"):
            log.info("in a child")
            with in_step("shop:charge"):
                log.warning("in a step %d", 3)
        log.info("explicit", extra={"run_id": "x"})
    finally:
        base.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "outside",
        "in a child",
        "in a step 3",
        "explicit",
    ]
    assert "run_id" not in lines[0]
    assert lines[1]["run_id"] == "order-7" and lines[1]["execution_id"] == "order-7/2/0"
    assert "step" not in lines[1]
    assert lines[2]["step"] == "shop:charge" and lines[2]["level"] == "WARNING"
    assert lines[3]["run_id"] == "x"


def test_text_format_appends_the_run_once() -> None:
    out, handler = capture(TextFormatter())
    base = logging.getLogger("flowz.test2")
    base.addHandler(handler)
    base.setLevel(logging.INFO)
    try:
        with log_context("r1", "r1"):
            get_logger("flowz.test2").info("top")
        with log_context("r1", "r1/0/1", "m:f"):
            get_logger("flowz.test2").info("child")
    finally:
        base.removeHandler(handler)
    top, child = out.getvalue().splitlines()
    assert top.endswith("top [run=r1]")
    assert child.endswith("child [run=r1 execution=r1/0/1 step=m:f]")


def worker(url: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flowz", "worker", "tests.ui_app", "--log-format", "json"],
            cwd=ROOT,
            env={**os.environ, "FLOWZ_DATABASE_URL": url, "FLOWZ_LEASE_SECONDS": "3", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def records(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(line) for line in lines if line.startswith("{")]


def wait_for(check: Callable[[], object], what: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)  # another process's log file: nothing to wait on but the file
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_worker_json_logs_say_reaps_give_backs_and_unknown_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    settings = Settings(database_url=url, progress=False)

    async def start(*runs: tuple[Any, str, tuple[Any, ...]]) -> None:
        async with Client(settings=settings) as client:
            for wf, run_id, args in runs:
                await client.start(wf.options(id=run_id), *args)

    @ui_app.flowz.workflow
    async def nobody_knows() -> None:
        return None

    anyio.run(start, (nobody_knows, "orphan-1", ()), (ui_app.crawl, "slow-1", (1, 60.0)))
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = worker(url, first_log, FLOWZ_SHUTDOWN_GRACE_SECONDS="0.2")
    try:
        # The slow child runs in the first worker; its log lines name it.
        wait_for(
            lambda: (
                any(r.get("execution_id") == "slow-1/0/0" for r in records(first_log))
                or _running(url, "slow-1/0/0")
            ),
            "the child to start",
        )
        orphan = wait_for(
            lambda: [r for r in records(first_log) if r.get("run_id") == "orphan-1"],
            "the warning about work no worker knows",
        )[0]
        assert orphan["level"] == "WARNING" and "no live worker knows" in orphan["message"]
        assert nobody_knows.name in orphan["message"]
        # Killed: the second worker on this host puts its work back at once, and says so.
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second = worker(url, second_log, FLOWZ_SHUTDOWN_GRACE_SECONDS="0.2")
        reaped = wait_for(
            lambda: [r for r in records(second_log) if "put back" in r["message"]],
            "the reap to be logged",
        )[0]
        assert "1 execution(s)" in reaped["message"] and "worker died" in reaped["message"]
        wait_for(lambda: _running(url, "slow-1/0/0"), "the child to run again")
        # Stopped: the running child goes back, with a count.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
        gave_back = [r for r in records(second_log) if "still running after" in r["message"]]
        assert gave_back and "1 execution(s)" in gave_back[0]["message"]
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()


def _running(url: str, execution_id: str) -> bool:
    async def look() -> bool:
        async with Client(settings=Settings(database_url=url, progress=False)) as client:
            return (await client.get_run(execution_id)).status == "running"

    try:
        return anyio.run(look)
    except Exception:
        return False
