"""The examples run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.mark.timeout(120)
def test_quickstart_prints_the_sum_and_resumes_by_id(tmp_path: Path) -> None:
    env = {**os.environ, "FLOWZ_RUN_ID": "quick"}
    env.pop("FLOWZ_DATABASE_URL", None)  # the default ./.flowz/flowz.db, in the working dir
    command = [sys.executable, str(EXAMPLES / "quickstart.py")]
    first = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "999000"
    assert (tmp_path / ".flowz" / "flowz.db").exists()
    again = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert again.stdout.strip() == "999000"


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_the_fleet_example_runs_on_two_workers(postgres_url: str, tmp_path: Path) -> None:
    import signal

    env = {**os.environ, "FLOWZ_DATABASE_URL": postgres_url, "FLOWZ_CONCURRENCY": "8"}
    logs = [(tmp_path / f"w{i}.log").open("wb") for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "flowz", "worker", str(EXAMPLES / "fleet.py")],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    try:
        # Both workers up before the run starts, or the first may finish it alone.
        deadline = time.monotonic() + 60
        while not all("functions, queue" in (tmp_path / f"w{i}.log").read_text() for i in range(2)):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.05)
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "fleet.py"), "400"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=30) for proc in workers]
        for log in logs:
            log.close()
    assert done.returncode == 0, done.stderr
    assert ": succeeded" in done.stdout
    assert "best: word104xzzzzzz (240)" in done.stdout
    assert "children ran on 2 worker process(es)" in done.stdout
    assert codes == [0, 0]


def run_example(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run examples/SCRIPT as a user would, on a database of its own; it must succeed."""
    env = {**os.environ, "FLOWZ_DATABASE_URL": f"sqlite:///{tmp_path / 'example.db'}"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.timeout(120)
def test_the_fanout_example_returns_a_typed_report(tmp_path: Path) -> None:
    done = run_example(tmp_path, "fanout.py", "40")
    assert done.stdout.strip().startswith('{"pages":40,')
    assert "fanout:fetch" in done.stderr and "40/40 done" in done.stderr  # plain lines, no TTY


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("tree.py", "'Seville': 13.7"),
        ("retries.py", "charge was called 3 times"),
        ("sleep.py", "sent 'How is it going?' to ada@example.com"),
        ("tracing.py", "    step tracing:price  attempt 1  ERROR ConnectionError: the price"),
        ("tracing.py", "      step tracing:reserve  x 3  (succeeded)"),
    ],
)
def test_the_tutorial_examples_run(tmp_path: Path, script: str, expected: str) -> None:
    assert expected in run_example(tmp_path, script).stdout


@pytest.mark.timeout(120)
def test_the_testing_tutorial_passes_under_pytest(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLES / "test_pipeline.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout


@pytest.mark.timeout(120)
def test_the_approval_example_waits_for_a_message_then_charges(tmp_path: Path) -> None:
    lines = run_example(tmp_path, "approval.py").stdout.splitlines()
    assert lines[0] == "status: waiting for approval"
    assert lines[1].endswith(": charged 19.99") and lines[2] == "events: {'status': 'charging'}"


@pytest.mark.timeout(120)
def test_the_operate_example_finds_forks_and_prunes(tmp_path: Path) -> None:
    lines = run_example(tmp_path, "operate.py").stdout.splitlines()
    assert lines[:3] == [
        "o-1: charged 10 EUR, 2 labels",
        "o-2 failed: no label printer for o-2/item-2",
        "o-3: charged 5 EUR, 1 labels",
    ]
    assert lines[3].startswith("failed: o-2-") and lines[3].endswith(
        "ValueError: no label printer for o-2/item-2"
    )
    assert [line.split()[1:] for line in lines[4:7]] == [
        ["step", "operate:reserve", "succeeded"],
        ["step", "operate:charge", "succeeded"],
        ["gather", "operate:label", "scheduled"],
    ]
    assert lines[7:] == [
        "fork: o-2: charged 15 EUR, 3 labels",
        "charged: o-1, o-2, o-3",
        "pruned 1 failed run(s)",
    ]


@pytest.mark.timeout(120)
def test_the_deploy_check_example_passes_under_pytest(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(EXAMPLES / "test_deploy_check.py")],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


@pytest.mark.timeout(120)
def test_the_limits_example_holds_its_limits_and_priorities(tmp_path: Path) -> None:
    lines = run_example(tmp_path, "limits.py").stdout.splitlines()
    assert lines[0].startswith("crawled 24 pages, 590 bytes, in ")
    assert lines[1] == "the urgent crawl (succeeded) went first: 0 pages before it"
    assert lines[2] == "at most 4 requests at once (limit 4)"
    # 28 starts at 8 a second: the rate held them to at least three seconds.
    assert float(lines[0].split(" in ")[1].removesuffix(" s")) >= 3.0


@pytest.mark.timeout(120)
def test_the_scheduled_example_runs_a_tick_by_hand(tmp_path: Path) -> None:
    out = run_example(tmp_path, "scheduled.py").stdout.strip()
    assert out == "Friday 04 December, 09:00: 42 sold since the day before"
