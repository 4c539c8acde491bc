"""The examples run as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys
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
