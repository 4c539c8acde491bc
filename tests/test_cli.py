"""The flowz command line: through typer's CliRunner and as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from flowz import Client, FlowzError, Settings
from flowz.cli import app
from flowz.store._sql import SCHEMA_VERSION

ROOT = Path(__file__).parents[1]
runner = CliRunner()


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FLOWZ_PROGRESS", "0")
    monkeypatch.setenv("CLI_FIXED", str(tmp_path / "fixed"))
    return {**os.environ}


def invoke(*args: str) -> tuple[int, str, BaseException | None]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output, result.exception


def flowz(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowz", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_run_prints_the_result_as_json(cli_env: dict[str, str]) -> None:
    code, out, _ = invoke("run", "tests.cli_app:squares", "--input", "[4]", "--id", "sq")
    assert code == 0 and out.strip() == "[0, 1, 4, 9]"
    code, out, _ = invoke("status", "sq")
    assert "succeeded" in out and "[0, 1, 4, 9]" in out
    code, out, _ = invoke("show", "sq")
    assert "tests.cli_app:squares" in out and "4/4" in out
    code, out, _ = invoke("list", "--status", "succeeded")
    assert "sq" in out and "tests.cli_app:squares" in out


def test_show_lists_the_failed_children_and_why(cli_env: dict[str, str]) -> None:
    code, out, _ = invoke("run", "tests.cli_app:odds", "--input", "[16]", "--id", "odds")
    assert code == 0 and out.strip() == str(sum(range(1, 16, 2)))
    code, out, _ = invoke("show", "odds")
    assert code == 0 and "16/16 · 8 failed" in out and "8 failed:" in out
    assert "tests.cli_app:odd_only #0 (x=0) Unlucky: 0 is even" in out
    assert "#8 (x=8)" in out and "#10 (x=10)" not in out
    assert "… 3 more: flowz show odds --failed" in out
    code, out, _ = invoke("show", "odds", "--failed")
    assert "#14 (x=14) Unlucky: 14 is even" in out and "more" not in out


def test_run_from_a_file_path_with_input_from_a_file(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "input.json").write_text('{"n": 3}')
    code, out, _ = invoke(
        "run", "tests/cli_app.py:squares", "--input", f"@{tmp_path / 'input.json'}"
    )
    assert code == 0 and out.strip() == "[0, 1, 4]"


def test_a_failed_run_exits_non_zero_and_retry_resumes_it(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    code, _, error = invoke("run", "tests.cli_app:fragile", "--input", "[3]", "--id", "fr")
    assert code == 1 and isinstance(error, FlowzError)
    assert "Unlucky: 3 is unlucky" in str(error) and "fail_until_fixed" in str(error)
    Path(cli_env["CLI_FIXED"]).touch()
    code, out, _ = invoke("retry", "fr")
    assert code == 0 and "pending again" in out
    code, out, _ = invoke("run", "tests.cli_app:fragile", "--input", "[3]", "--id", "fr")
    assert code == 0 and out.strip() == "12"
    code, _, error = invoke("retry", "fr")
    assert "only a failed run can be retried" in str(error)


def test_start_enqueues_and_cancel_stops_the_tree(cli_env: dict[str, str]) -> None:
    code, out, _ = invoke("start", "tests.cli_app:forever", "--input", "[3]", "--id", "ca")
    assert code == 0 and out.strip() == "ca"
    code, out, _ = invoke("status", "ca")
    assert "pending" in out and "no worker is running on this database" in out
    code, out, _ = invoke("cancel", "ca")
    assert code == 0 and "1 execution(s) cancelled" in out
    code, out, _ = invoke("status", "ca")
    assert "cancelled" in out


def make_database(url: str) -> None:
    async def open_and_close() -> None:
        async with Client(url):
            pass

    anyio.run(open_and_close)


BAD_INPUTS = [
    (["run", "no_such_module:wf"], "cannot import 'no_such_module': no such module"),
    (["run", "tests/missing.py:wf"], "no such file: tests/missing.py"),
    (["run", "tests.cli_app:nothing"], "has no attribute 'nothing'"),
    (["run", "tests.cli_app:not_a_workflow"], "is not a workflow"),
    (["run", "tests.cli_app:squares", "--input", "[1,"], "--input is not valid JSON"),
    (["run", "tests.cli_app:squares", "--input", '["x"]'], "parameter 'n' is not valid"),
    (["run", "tests.cli_app:squares", "--input", "[1, 2]"], "too many positional arguments"),
    (["status", "nope"], "no run with id 'nope'"),
    (["cancel", "nope"], "no run with id 'nope'"),
    (["list", "--status", "weird"], "--status 'weird': use one of"),
    (["run", "squares"], "write MODULE:WORKFLOW"),
    (["ui", "--host", "0.0.0.0"], "give it a secret with --token"),
    (["ui", "--db", "sqlite:///no/such/dir/x.db"], "no/such/dir/x.db"),
    (["worker", "tests.cli_app", "--log-format", "xml"], "--log-format 'xml': use text or json"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_gets_one_clear_error(
    cli_env: dict[str, str], args: list[str], message: str
) -> None:
    make_database(cli_env["FLOWZ_DATABASE_URL"])  # read commands never create one
    code, _, error = invoke(*args)
    assert code != 0 and isinstance(error, FlowzError)
    assert message in str(error)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_gets_one_line_on_stderr_from_the_real_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(ROOT)
    env = {**os.environ, "FLOWZ_DATABASE_URL": f"sqlite:///{tmp_path / 'bad.db'}"}
    make_database(env["FLOWZ_DATABASE_URL"])
    done = flowz(env, *args)
    assert done.returncode == 1
    assert done.stderr.startswith("flowz: ") and message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_an_unreachable_database_is_one_line(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "FLOWZ_DATABASE_URL": "postgresql://root@127.0.0.1:1/none"}
    done = flowz(env, "status", "x")
    assert done.returncode == 1
    assert (
        done.stderr.startswith("flowz: cannot reach PostgreSQL") and "Traceback" not in done.stderr
    )


def test_version_and_help(cli_env: dict[str, str]) -> None:
    code, out, _ = invoke("--version")
    assert code == 0 and out.startswith("flowz ")
    for command in ("run", "start", "worker", "status", "list", "show", "watch", "cancel", "retry"):
        code, out, _ = invoke(command, "--help")
        assert code == 0 and "Usage" in out, command
    wide = runner.invoke(app, ["worker", "--help"], env={"COLUMNS": "200"}).output
    assert "at once (default: 64)." in wide  # rich markup once ate "[default: 64]"


@pytest.mark.slow
def test_the_real_command_line(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "FLOWZ_SHUTDOWN_GRACE_SECONDS": "1"}
    done = flowz(env, "run", "tests.cli_app:squares", "--input", "[5]", "--id", "sub")
    assert done.returncode == 0 and done.stdout.strip() == "[0, 1, 4, 9, 16]", done.stderr
    for args, expected in [
        (["status", "sub"], "succeeded"),
        (["list"], "sub"),
        (["show", "sub"], "5/5"),
        (["watch", "sub"], "succeeded"),
        (["db", "upgrade"], f"schema at v{SCHEMA_VERSION}"),
    ]:
        done = flowz(env, *args)
        assert done.returncode == 0 and expected in done.stdout, (args, done.stderr)

    watched = flowz(env, "watch", "sub")  # piped: the last tree once, whole lines, no codes
    assert watched.stdout.endswith("5/5\n") and "\x1b[" not in watched.stdout, watched.stdout

    bad = flowz(env, "run", "tests.cli_app:not_a_workflow")
    assert bad.returncode == 1 and "is not a workflow" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

    failed = flowz(env, "run", "tests.cli_app:fragile", "--input", "[2]", "--id", "subfail")
    assert failed.returncode == 1 and "Unlucky: 2 is unlucky" in failed.stderr
    assert flowz(env, "status", "subfail").returncode == 1  # 1: failed or cancelled
    Path(env["CLI_FIXED"]).touch()
    assert flowz(env, "retry", "subfail").returncode == 0

    # start + worker: the worker resumes the retried run and runs a new one.
    started = flowz(env, "start", "tests.cli_app:squares", "--input", "[3]")
    run_id = started.stdout.strip()
    assert flowz(env, "status", run_id).returncode == 2  # 2: not finished yet
    worker = subprocess.Popen(
        [sys.executable, "-m", "flowz", "worker", "tests.cli_app"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not all(
            "succeeded" in flowz(env, "status", rid).stdout for rid in (run_id, "subfail")
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cancel_me = flowz(env, "start", "tests.cli_app:forever", "--input", "[2]").stdout.strip()
        time.sleep(0.5)
        assert "cancelled" in flowz(env, "cancel", cancel_me).stdout
        assert "cancelled" in flowz(env, "status", cancel_me).stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert "[0, 1, 4]" in flowz(env, "status", run_id).stdout


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "flowz", "worker", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def status_until(env: dict[str, str], run_id: str, text: str) -> str:
    deadline = time.monotonic() + 60
    while text not in (out := flowz(env, "status", run_id).stdout):
        assert time.monotonic() < deadline, out
    return out


def test_one_name_however_the_module_is_named_and_status_says_who_could_run_it(
    cli_env: dict[str, str],
) -> None:
    """Started by path, served by dotted name (examples/ is not a package)."""
    env = {**cli_env, "FLOWZ_SHUTDOWN_GRACE_SECONDS": "1"}
    started = flowz(env, "start", "examples/quickstart.py:fan", "--input", "[10]", "--id", "nm")
    assert started.stdout.strip() == "nm", started.stderr
    waiting = flowz(env, "status", "nm")
    assert waiting.returncode == 2
    assert "quickstart:fan  pending  (queued: no worker is running on this database" in (
        waiting.stdout
    )
    workers = [start_worker(env, "tests.cli_app")]
    try:
        out = status_until(env, "nm", "no live worker knows quickstart:fan; live workers know:")
        assert "tests.cli_app:approval" in out
        workers.append(start_worker(env, "examples.quickstart", "--queue", "other"))
        status_until(env, "nm", "no live worker that knows quickstart:fan takes queue 'default'")
        workers.append(start_worker(env, "examples.quickstart"))
        status_until(env, "nm", "succeeded  result: 90")
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(timeout=30) == 0


def test_send_a_message_and_read_events_from_the_command_line(cli_env: dict[str, str]) -> None:
    code, out, _ = invoke("start", "tests.cli_app:approval", "--input", '["o-7"]', "--id", "ap")
    yes = '{"verdict": "yes"}'
    sent = [invoke("send", "ap", "decision", "--value", yes, "--key", "k1") for _ in "ab"]
    assert [(code, out.strip()) for code, out, _ in sent] == [
        (0, "ap: sent on 'decision'"),
        (0, "ap: already delivered with --key k1: nothing stored"),  # stored once
    ]
    code, out, _ = invoke("run", "tests.cli_app:approval", "--input", '["o-7"]', "--id", "ap")
    assert code == 0 and out.strip() == '"o-7: yes, then None"'
    code, out, _ = invoke("events", "ap")
    assert out.strip() == 'status\t"o-7: waiting"'
    code, out, _ = invoke("events", "ap", "--json")
    assert json.loads(out) == {"status": "o-7: waiting"}
    code, out, _ = invoke("stream", "ap", "log")
    assert code == 0 and out.splitlines() == ["o-7 received", '{"verdict": "yes"}']
    code, out, _ = invoke("send", "ap", "decision", "--value", yes, "--key", "k1")
    assert code == 0 and out.strip() == "ap: already delivered with --key k1: nothing stored"
    code, _, error = invoke("send", "ap", "decision", "--value", "1")
    assert code == 1 and "'ap' has succeeded: a message sent to it would never be read" in str(
        error
    )
    code, _, error = invoke("send", "ap", "decision", "--value", "{bad")
    assert code == 1 and "--value is not valid JSON" in str(error)


def test_json_output_for_scripts(cli_env: dict[str, str]) -> None:
    long_id = "a-run-id-long-enough-to-be-folded-by-a-table-in-eighty-columns-" + "x" * 40
    code, out, _ = invoke("run", "tests.cli_app:odds", "--input", "[4]", "--id", long_id, "--json")
    run = json.loads(out)
    assert code == 0 and run["id"] == long_id and run["status"] == "succeeded"
    assert run["result"] == 4 and run["workflow"] == "tests.cli_app:odds"
    assert run["finished_at"].endswith("+00:00")

    code, out, error = invoke("run", "tests.cli_app:fragile", "--input", "[3]", "--json")
    failed = json.loads(out)
    assert code == 1 and isinstance(error, FlowzError) and failed["status"] == "failed"
    assert failed["error"] == {"type": "Unlucky", "message": "3 is unlucky"}
    code, out, _ = invoke("status", failed["id"], "--json")
    assert code == 1 and json.loads(out) == failed

    invoke("start", "tests.cli_app:squares", "--input", "[2]", "--id", "queued")
    code, out, _ = invoke("status", "queued", "--json")
    assert code == 2 and "no worker is running" in json.loads(out)["waiting"]

    code, out, _ = invoke("show", long_id, "--json")
    tree = json.loads(out)
    assert tree["status"] == "succeeded" and tree["items"][0]["kind"] == "children"
    assert (tree["items"][0]["total"], tree["items"][0]["failed"]) == (4, 2)
    assert [(f["child_index"], f["input"], f["error"]["type"]) for f in tree["failures"]] == [
        (0, {"x": 0}, "Unlucky"),
        (2, {"x": 2}, "Unlucky"),
    ]

    code, out, _ = invoke("list", "--json")
    assert {r["id"] for r in json.loads(out)} == {long_id, failed["id"], "queued"}
    # Piped (not a terminal): one tab-separated line per run, whole ids first.
    code, out, _ = invoke("list")
    lines = [line.split("\t") for line in out.splitlines()]
    assert len(lines) == 3 and {fields[0] for fields in lines} == {long_id, failed["id"], "queued"}
    assert all(len(fields) == 5 for fields in lines)

    code, out, _ = invoke("info", "--json")
    info = json.loads(out)
    assert code == 0 and info["schema"] == SCHEMA_VERSION and info["workers"] == []
    assert info["database"] == os.environ["FLOWZ_DATABASE_URL"]


def test_verbose_says_which_database(cli_env: dict[str, str]) -> None:
    from flowz._config import redacted_url

    assert redacted_url("postgresql://ann:secret@db:5432/flowz") == "postgresql://ann@db:5432/flowz"
    make_database(cli_env["FLOWZ_DATABASE_URL"])
    done = flowz(cli_env, "-v", "info")
    assert done.returncode == 0, done.stderr
    url = cli_env["FLOWZ_DATABASE_URL"]
    assert done.stderr.strip() == f"flowz: database {url}"
    assert f"database  {url}" in done.stdout and "workers   0 live" in done.stdout
    missing = flowz({**cli_env, "FLOWZ_DATABASE_URL": "sqlite:////nonexistent/x.db"}, "info")
    assert missing.returncode == 1 and "no flowz database at '/nonexistent/x.db'" in missing.stderr


def test_events_and_messages_across_processes(cli_env: dict[str, str]) -> None:
    """A worker process runs the workflow; this process and `flowz` commands talk to it."""
    env = {**cli_env, "FLOWZ_SHUTDOWN_GRACE_SECONDS": "1"}
    assert flowz(env, "start", "tests.cli_app:approval", "--input", '["x-1"]', "--id", "xp").stdout
    worker = start_worker(env, "tests.cli_app")
    try:

        async def status_event() -> object:
            async with Client() as client:
                return await client.handle("xp").get_event("status", timeout=30)

        assert anyio.run(status_event) == "x-1: waiting"  # set in the worker process
        assert flowz(env, "send", "xp", "decision", "--value", '{"verdict": "ok"}').returncode == 0
        status_until(env, "xp", 'succeeded  result: "x-1: ok, then None"')
        assert flowz(env, "stream", "xp", "log").stdout.splitlines()[0] == "x-1 received"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


def test_list_filters_journal_fork_and_prune(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert invoke("run", "tests.cli_app:squares", "--input", "[3]", "--id", "a")[0] == 0
    assert invoke("run", "tests.cli_app:fragile", "--input", "[2]", "--id", "b")[0] == 1

    code, out, _ = invoke("list", "--status", "failed", "--json")
    assert code == 0 and [(r["id"], r["error"]["type"]) for r in json.loads(out)] == [
        ("b", "Unlucky")
    ]
    code, out, _ = invoke("list", "--name", "tests.cli_app:squares")
    assert [line.split("\t")[0] for line in out.splitlines()] == ["a"]
    code, out, _ = invoke("list", "--status", "succeeded,failed", "--since", "1h")
    assert {line.split("\t")[0] for line in out.splitlines()} == {"a", "b"}
    assert invoke("list", "--until", "1h")[1] == ""
    code, out, _ = invoke("list", "--parent", "a", "--json")
    assert sorted(r["id"] for r in json.loads(out)) == ["a/0/0", "a/0/1", "a/0/2"]
    code, out, _ = invoke("list", "--limit", "1")
    hint = next(line for line in out.splitlines() if line.startswith("more runs: repeat"))
    assert [line[:2] for line in out.splitlines() if line != hint] == ["b\t"]
    code, out, _ = invoke("list", "--limit", "1", "--cursor", hint.split()[-1])
    assert [line[:2] for line in out.splitlines()] == ["a\t"]
    code, out, exc = invoke("list", "--since", "yesterday")
    assert code == 1 and "--since 'yesterday': write how long ago (1d" in str(exc)

    code, out, _ = invoke("journal", "b")
    lines = [line.split("\t") for line in out.splitlines()]
    assert [(f[0], f[1], f[2], f[3]) for f in lines] == [
        ("0", "step", "tests.cli_app:square", "succeeded"),
        ("1", "step", "tests.cli_app:fail_until_fixed", "failed"),
    ]
    code, out, _ = invoke("journal", "b", "--json")
    assert json.loads(out)[1]["error"]["message"] == "2 is unlucky"

    code, out, _ = invoke("fork", "b", "--at", "1", "--id", "b2")
    assert code == 0 and out.strip() == "b2"
    code, out, exc = invoke("fork", "b", "--at", "5")
    assert code == 1 and "fork at 0 to 2" in str(exc)
    (tmp_path / "fixed").touch()
    code, out, _ = invoke("run", "tests.cli_app:fragile", "--input", "[2]", "--id", "b2")
    assert code == 0 and out.strip() == "6"
    assert invoke("status", "b")[0] == 1  # the original stays failed

    code, out, _ = invoke("db", "prune", "--older-than", "1d", "--dry-run")
    assert code == 0 and out.strip() == "would delete 0 run(s) that ended more than 1d ago"
    code, out, _ = invoke("db", "prune", "--older-than", "0s", "--status", "failed")
    assert code == 0 and out.strip() == "deleted 1 run(s) that ended more than 0s ago"
    code, out, exc = invoke("db", "prune", "--older-than", "a month")
    assert code == 1 and "--older-than='a month' is not a duration" in str(exc)
    code, out, _ = invoke("list")
    assert {line.split("\t")[0] for line in out.splitlines()} == {"a", "b2"}


SHOP_V1 = """
from pathlib import Path
from flowz import step, workflow

LOG = Path(__file__).with_name("effects.log")

@step
async def price(x: int) -> int:
    with LOG.open("a") as log:
        log.write("price\\n")
    return x

@step
async def ship(x: int) -> int:
    with LOG.open("a") as log:
        log.write("ship\\n")
    return 2 * x

@workflow
async def order(x: int) -> int:
    a = await price(x)
    b = await ship(x)
    return a + b
"""


@pytest.mark.slow
def test_flowz_replay_checks_recorded_runs_against_changed_code(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    code_file = tmp_path / "shopflow.py"
    code_file.write_text(SHOP_V1)
    done = flowz(cli_env, "run", f"{code_file}:order", "--input", "[1]", "--id", "r1")
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr
    effects = (tmp_path / "effects.log").read_text()

    done = flowz(cli_env, "replay", str(code_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1 workflow execution(s) checked, 0 would not replay"

    code_file.write_text(SHOP_V1.replace("a = await price(x)\n    b = await ship(x)",
                                         "b = await ship(x)\n    a = await price(x)"))  # fmt: skip
    done = flowz(cli_env, "replay", str(code_file), "--since", "1h")
    assert done.returncode == 1, done.stderr
    problem, summary = done.stdout.strip().splitlines()
    assert problem.startswith("r1 (shopflow:order, succeeded): run 'r1': at position 0")
    assert "now calls 'step shopflow:ship', but its journal recorded 'step shopflow:price'" in (
        problem
    )
    assert summary == "1 workflow execution(s) checked, 1 would not replay"
    done = flowz(cli_env, "replay", str(code_file), "--run", "r1", "--json")
    assert json.loads(done.stdout)[0]["problem"].startswith("run 'r1': at position 0")
    assert (tmp_path / "effects.log").read_text() == effects  # no step ran


def test_status_says_when_a_queue_s_limit_holds_a_run_s_children(cli_env: dict[str, str]) -> None:
    from flowz.store import open_store
    from flowz.store._protocol import JournalEntry, NewExecution, QueueLimits

    async def run_held_by_its_queue() -> None:
        store = await open_store(Settings(database_url=cli_env["FLOWZ_DATABASE_URL"]))
        try:
            await store.define_queues([QueueLimits("api", concurrency=1)])
            await store.create_run(NewExecution("held", "held", "workflow", "wf", []))
            [parent] = await store.claim("w", ["wf"], "default", 1, 30)
            children = [
                NewExecution(f"held/0/{i}", "held", "step", "s", [], queue="api",
                             parent_id="held", position=0, child_index=i)
                for i in range(2)
            ]  # fmt: skip
            entry = JournalEntry(0, "gather", "s", "scheduled", output={"width": 2})
            assert await store.wait_for_children(parent.fence, 1, [0], [entry], children)
            taken, _ = await store.claim_limited("w", ["s"], "api", 5, 30)
            assert len(taken) == 1
        finally:
            await store.aclose()

    anyio.run(run_held_by_its_queue)
    code, out, _ = invoke("status", "held")
    assert code == 2
    assert (
        out.strip()
        == "held  wf  waiting  (children wait: queue 'api' is at its limit: 1/1 running)"
    )
    code, out, _ = invoke("queues", "--json")
    [api] = json.loads(out)
    assert (api["queue"], api["running"], api["waiting"]) == ("api", 1, 1)
    assert api["held_by"] == "queue 'api' is at its limit: 1/1 running"
