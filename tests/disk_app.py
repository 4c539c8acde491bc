"""A run that writes more than its disk holds, for tests/test_sqlite_faults.py.

Usage: python disk_app.py STEPS RUN_ID. The database is FLOWZ_DATABASE_URL (on a
tiny filesystem the test mounts); every step call appends its index to
$DISK_EFFECTS (elsewhere). Prints the result, or the store error and exits 3.
`python disk_app.py state` prints the database's state as one JSON line.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import flowz
from flowz import step, workflow

BLOB = 50_000


@step
def blob(i: int) -> str:
    with Path(os.environ["DISK_EFFECTS"]).open("a") as effects:
        effects.write(f"{i}\n")
    return "x" * BLOB


@workflow
async def fill(steps: int) -> int:
    total = 0
    for i in range(steps):
        total += len(await blob(i))
    return total


def state(path: Path) -> dict[str, object]:
    """Integrity, succeeded journal entries and execution statuses of the database."""
    with sqlite3.connect(path) as db:
        return {
            "integrity": db.execute("PRAGMA integrity_check").fetchone()[0],
            "entries": db.execute(
                "SELECT count(*) FROM flowz_journal WHERE status = 'succeeded'"
            ).fetchone()[0],
            "runs": dict(db.execute("SELECT id, status FROM flowz_executions").fetchall()),
        }


if __name__ == "__main__" and sys.argv[1] == "state":
    print("STATE", json.dumps(state(Path(os.environ["FLOWZ_DATABASE_URL"][len("sqlite:///") :]))))
elif __name__ == "__main__":
    try:
        print(flowz.run(fill.options(id=sys.argv[2], progress=False), int(sys.argv[1])))
    except flowz.StoreError as exc:
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(3)
