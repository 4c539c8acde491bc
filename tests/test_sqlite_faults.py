"""SQLite faults: a full disk and a read-only database, each on a real filesystem.

Each test mounts a tiny tmpfs (or a read-only bind mount) in a mount namespace of its
own (`unshare -m`), so nothing outside the test sees it; that needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.disk_app import state

APP = Path(__file__).with_name("disk_app.py")
STEPS = 40

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _needs_mounts() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("mounting a tiny filesystem needs root and unshare(1)")


def app_env(database: Path, effects: Path) -> dict[str, str]:
    return {
        "FLOWZ_DATABASE_URL": f"sqlite:///{database}",
        "DISK_EFFECTS": str(effects),
        "FLOWZ_POLL_SECONDS": "0.2",
        "FLOWZ_LEASE_SECONDS": "600",  # recovery must come from the dead pid, not expiry
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }


def in_mount_namespace(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "-m", "sh", "-eu", "-c", script],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def test_a_full_disk_stops_the_run_with_a_clear_error_and_it_resumes_once_freed(
    tmp_path: Path,
) -> None:
    disk, effects = tmp_path / "disk", tmp_path / "effects.log"
    disk.mkdir()
    env = app_env(disk / "flowz.db", effects)
    run = f"{sys.executable} {APP} {STEPS} fill"
    check = f"{sys.executable} {APP} state"
    result = in_mount_namespace(
        # 1 MiB holds ~20 of the 40 results of 50 kB; then 64 MiB, as if space were freed.
        f"mount -t tmpfs -o size=1m tmpfs {disk}\n"
        f"{run} || echo EXIT=$?\n"
        f"{check}\n"
        f"mount -o remount,size=64m {disk}\n"
        f"{run}\n"
        f"{check}\n",
        env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    error = next(line for line in lines if line.startswith("StoreNotWritableError"))
    assert "is full" in error and "Free space, then resume the run by its id" in error
    assert "EXIT=3" in lines

    before, after = (json.loads(line[6:]) for line in lines if line.startswith("STATE "))
    # The full disk rolled the failing write back: consistent, and what was stored is there.
    assert before["integrity"] == "ok" and 0 < before["entries"] < STEPS
    # Given back as pending, or still running if even that write failed (then reaped).
    assert before["runs"]["fill"] in ("pending", "running")
    assert after == {"integrity": "ok", "entries": STEPS, "runs": {"fill": "succeeded"}}
    assert str(STEPS * 50_000) in lines
    calls = Counter(effects.read_text().split())
    assert set(calls) == {str(i) for i in range(STEPS)}
    # Steps journaled before the disk filled did not run again; only the one in flight did.
    assert sum(calls.values()) <= STEPS + 1, calls


def test_a_read_only_database_says_so_and_is_left_untouched(tmp_path: Path) -> None:
    folder, effects = tmp_path / "ro", tmp_path / "effects.log"
    folder.mkdir()
    env = app_env(folder / "flowz.db", effects)
    first = subprocess.run(
        [sys.executable, str(APP), "2", "done-before"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert first.stdout.strip() == "100000", first.stderr
    stored = state(folder / "flowz.db")

    result = in_mount_namespace(
        f"mount --bind {folder} {folder}\n"
        f"mount -o remount,bind,ro {folder}\n"
        f"{sys.executable} {APP} 2 new-run || echo EXIT=$?\n"
        f"{sys.executable} -m flowz list || echo EXIT=$?\n"
        f"{sys.executable} -m flowz show done-before || echo EXIT=$?\n"
        f"FLOWZ_DATABASE_URL=sqlite:///{folder / 'new.db'} {sys.executable} {APP} 1 x || true\n",
        env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[1] == "EXIT=3", result.stdout
    error = lines[0]
    assert error.startswith("StoreNotWritableError: the SQLite database")
    assert "is read-only" in error and "make the file and its folder writable" in error
    # Reading needs no write: the runs stored before are still listed.
    assert "done-before" in result.stdout and "new-run" not in result.stdout
    assert result.stdout.count("EXIT=") == 1
    # A new database in a read-only folder cannot even be created: the same error.
    assert lines[-1].startswith("StoreNotWritableError: the SQLite database")
    assert lines[-1].endswith("point FLOWZ_DATABASE_URL elsewhere")
    assert state(folder / "flowz.db") == stored


def test_a_worker_process_on_a_full_disk_keeps_trying_and_finishes_once_freed(
    tmp_path: Path,
) -> None:
    disk, effects, log = tmp_path / "disk", tmp_path / "effects.log", tmp_path / "worker.log"
    disk.mkdir()
    env = {**app_env(disk / "flowz.db", effects), "FLOWZ_LEASE_SECONDS": "1.5"}
    python = sys.executable
    result = in_mount_namespace(
        f"mount -t tmpfs -o size=1m tmpfs {disk}\n"
        f"{python} -m flowz worker tests.disk_app > {log} 2>&1 &\n"
        "worker=$!\n"
        f"{python} -m flowz start tests.disk_app:fill -i '[{STEPS}]' --id fill\n"
        f"tries=0; until grep -q 'is full' {log}; do\n"
        "  sleep 0.1; tries=$((tries+1)); [ $tries -lt 600 ] || exit 9; done\n"
        f"mount -o remount,size=64m {disk}\n"
        f'tries=0; until {python} {APP} state | grep -q \'"fill": "succeeded"\'; do\n'
        "  sleep 0.2; tries=$((tries+1)); [ $tries -lt 150 ] || exit 8; done\n"
        "kill -TERM $worker; wait $worker\n"
        f"{python} {APP} state\n",
        env,
    )
    assert result.returncode == 0, (result.stdout, result.stderr, log.read_text()[-3000:])
    after = json.loads(result.stdout.splitlines()[-1][6:])
    assert after == {"integrity": "ok", "entries": STEPS, "runs": {"fill": "succeeded"}}
    assert set(Counter(effects.read_text().split())) == {str(i) for i in range(STEPS)}
