"""Crash recovery on SQLite: real processes, killed with SIGKILL mid-run, then restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

APP = Path(__file__).with_name("crash_app.py")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def launch(
    tmp_path: Path, args: list[str], hang_in: str = "", release: str = "1"
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "CRASH_RELEASE": release,
        "CRASH_LOG_DIR": str(tmp_path),
        "CRASH_HANG_IN": hang_in,
        "FLOWZ_DATABASE_URL": f"sqlite:///{tmp_path / 'crash.db'}",
        # Far longer than the test's timeout: recovery must come from the dead pid, not expiry.
        "FLOWZ_LEASE_SECONDS": "600",
        "FLOWZ_POLL_SECONDS": "0.2",
    }
    return subprocess.Popen(
        [sys.executable, str(APP), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def succeeded_children(tmp_path: Path) -> int:
    import sqlite3

    db = sqlite3.connect(tmp_path / "crash.db")
    try:
        return int(
            db.execute(
                "SELECT count(*) FROM flowz_executions "
                "WHERE parent_id IS NOT NULL AND status = 'succeeded'"
            ).fetchone()[0]
        )
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        db.close()


def kill_when_ready(
    proc: subprocess.Popen[str], tmp_path: Path, lines: int = 0, committed: int = 0
) -> None:
    deadline = time.monotonic() + 30
    while (
        not (tmp_path / "ready").exists()
        or len(calls(tmp_path)) < lines
        or (committed and succeeded_children(tmp_path) < committed)
    ):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached the crash point"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # reaps the process and closes its pipes
    (tmp_path / "ready").unlink()


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out.strip()


def test_a_killed_run_resumes_without_redoing_completed_steps(tmp_path: Path) -> None:
    kill_when_ready(launch(tmp_path, ["three_steps", "5", "run-1"], hang_in="three"), tmp_path)
    assert calls(tmp_path) == ["one", "two", "three-start"]
    assert finish(launch(tmp_path, ["three_steps", "5", "run-1"])) == str((5 + 1) * 2 + 3)
    # one and two come from the journal; three, interrupted, runs again and completes once.
    assert calls(tmp_path) == ["one", "two", "three-start", "three-start", "three-end"]


def test_a_run_killed_while_children_run_completes_with_each_child_once(tmp_path: Path) -> None:
    n = 20
    proc = launch(tmp_path, ["fan", str(n), "fan-1"], hang_in="children")
    # Killed once the even children are committed: those must not run again.
    kill_when_ready(proc, tmp_path, lines=n, committed=n // 2)
    first = Counter(calls(tmp_path))
    assert all(first[f"square-{i}"] == 1 for i in range(n))
    started = time.monotonic()
    assert finish(launch(tmp_path, ["fan", str(n), "fan-1"])) == str(sum(i * i for i in range(n)))
    assert time.monotonic() - started < 30, "the dead worker's claims were taken over at once"
    after = Counter(calls(tmp_path))
    # Children that had finished are not run again; the interrupted ones run once more.
    assert [after[f"square-{i}"] for i in range(n)] == [1 if i % 2 == 0 else 2 for i in range(n)]

    import sqlite3

    db = sqlite3.connect(tmp_path / "crash.db")
    rows = db.execute(
        "SELECT status, count(*) FROM flowz_executions GROUP BY status ORDER BY status"
    ).fetchall()
    db.close()
    assert rows == [("succeeded", n + 1)]


def test_a_durable_sleep_survives_a_killed_process(tmp_path: Path) -> None:
    started = time.monotonic()
    kill_when_ready(launch(tmp_path, ["sleepy", "1", "sleep-1"], hang_in="sleep"), tmp_path)
    assert finish(launch(tmp_path, ["sleepy", "1", "sleep-1"])) == "4"
    assert time.monotonic() - started >= 2.0
    assert calls(tmp_path) == ["one", "two"]


def test_messages_are_taken_once_each_in_order_across_a_killed_process(tmp_path: Path) -> None:
    import anyio

    import flowz
    from tests.crash_app import inbox

    async def start_and_send() -> None:
        async with flowz.Client(f"sqlite:///{tmp_path / 'crash.db'}") as client:
            handle = await client.start(inbox.options(id="in-1"), 3)
            for item in range(3):  # all before the workflow runs: kept for it
                await handle.send("item", item)

    anyio.run(start_and_send)
    kill_when_ready(launch(tmp_path, ["inbox", "3", "in-1"], hang_in="item"), tmp_path)
    assert calls(tmp_path) == ["item-0-start", "item-0-end", "item-1-start"]
    assert finish(launch(tmp_path, ["inbox", "3", "in-1"])) == "[0, 1, 2]"
    # Message 1 was taken before the crash: the replay gets it again from the journal.
    assert calls(tmp_path)[3:] == ["item-1-start", "item-1-end", "item-2-start", "item-2-end"]


def test_sigint_stops_the_process_and_gives_its_work_back(tmp_path: Path) -> None:
    proc = launch(tmp_path, ["three_steps", "1", "int-1"], hang_in="three")
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    (tmp_path / "ready").unlink()

    import sqlite3

    db = sqlite3.connect(tmp_path / "crash.db")
    status, owner = db.execute(
        "SELECT status, lease_owner FROM flowz_executions WHERE id = 'int-1'"
    ).fetchone()
    workers = db.execute("SELECT count(*) FROM flowz_workers").fetchone()[0]
    db.close()
    assert (status, owner, workers) == ("pending", None, 0)
    assert finish(launch(tmp_path, ["three_steps", "1", "int-1"])) == str((1 + 1) * 2 + 3)
    assert calls(tmp_path) == ["one", "two", "three-start", "three-start", "three-end"]


def test_patched_holds_across_a_killed_process(tmp_path: Path) -> None:
    # Release 1 records one and two, and is killed in three; release 2 resumes it.
    kill_when_ready(launch(tmp_path, ["release", "5", "old"], hang_in="three"), tmp_path)
    assert finish(launch(tmp_path, ["release", "5", "old"], release="2")) == str((5 + 1) * 2 + 3)
    assert calls(tmp_path) == ["one", "two", "three-start", "three-start", "three-end"]

    # A run of release 2 journals the patch before it is killed: it keeps the new branch.
    (tmp_path / "calls.log").unlink()
    kill_when_ready(
        launch(tmp_path, ["release", "5", "new"], hang_in="three", release="2"), tmp_path
    )
    assert finish(launch(tmp_path, ["release", "5", "new"], release="2")) == str(5 + 1 + 3)
    assert calls(tmp_path) == ["one", "three-start", "three-start", "three-end"]
