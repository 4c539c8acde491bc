"""Start-up cost: `import flowz` and short CLI commands, against `import pydantic, anyio`.

Each figure is the median of fresh interpreters, measured in the same run as its
baseline. Imports are timed inside the interpreter (start-up excluded); commands
as wall time of the whole process, next to a process that only imports the baseline.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .core import ROOT

_TIMED_IMPORT = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"


def _import_seconds(modules: str, samples: int) -> float:
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", _TIMED_IMPORT.format(modules)],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
        )
        for _ in range(samples)
    ]
    return statistics.median(runs)


def _process_seconds(args: list[str], samples: int, env: dict[str, str]) -> float:
    runs = []
    for _ in range(samples):
        started = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True, cwd=ROOT, env=env)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def startup(samples: int) -> dict[str, Any]:
    """Medians, in seconds, of each start-up figure and of its baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FLOWZ_DATABASE_URL": f"sqlite:///{Path(tmp) / 's.db'}"}
        python = [sys.executable, "-m", "flowz"]
        subprocess.run(  # a database with one finished run, for `flowz status`
            [*python, "run", "examples/quickstart.py:fan", "--input", "[3]", "--id", "s"],
            capture_output=True,
            check=True,
            cwd=ROOT,
            env={**env, "FLOWZ_PROGRESS": "0"},
        )
        return {
            "samples": samples,
            "import_baseline_s": _import_seconds("pydantic, anyio", samples),
            "import_flowz_s": _import_seconds("flowz", samples),
            "process_baseline_s": _process_seconds(
                [sys.executable, "-c", "import pydantic, anyio"], samples, env
            ),
            "version_s": _process_seconds([*python, "--version"], samples, env),
            "status_s": _process_seconds([*python, "status", "s"], samples, env),
        }


def startup_section(r: dict[str, Any]) -> list[str]:
    base, proc = r["import_baseline_s"], r["process_baseline_s"]
    rows = [
        ("`import pydantic, anyio` (baseline)", base, base),
        ("`import flowz`", r["import_flowz_s"], base),
        ("process: `python -c 'import pydantic, anyio'` (baseline)", proc, proc),
        ("process: `flowz --version`", r["version_s"], proc),
        ("process: `flowz status RUN` on an existing SQLite database", r["status_s"], proc),
    ]
    ratio = r["import_flowz_s"] / base
    return [
        f"## start-up (measured {r.get('measured_at', '?')}, median of {r['samples']})",
        "",
        "| what | median | vs its baseline |",
        "|---|---:|---:|",
        *(f"| {label} | {s * 1000:.0f} ms | {s / b:.2f}x |" for label, s, b in rows),
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| `import flowz` ≤ 3x `import pydantic, anyio` | {ratio:.2f}x | "
        f"{'yes' if ratio <= 3 else 'NO'} |",
    ]
