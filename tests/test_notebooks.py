"""The notebooks run in a real Jupyter kernel; their rendered output is checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


def outputs_text(notebook: object) -> str:
    parts: list[str] = []
    for cell in notebook.cells:  # type: ignore[attr-defined]
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts.extend(data.get(kind, "") for kind in ("text/plain", "text/html"))
    return "\n".join(parts)


def execute(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, messages: list[str] | None = None
) -> str:
    """Run notebooks/NAME in a real kernel (on the test's database); its rendered output.

    `messages` receives the type of every output message the kernel sent.
    """
    import nbclient
    import nbformat

    class Recording(nbclient.NotebookClient):  # type: ignore[misc]
        def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
            if messages is not None:
                messages.append(msg["msg_type"])
            return super().process_message(msg, cell, cell_index)

    monkeypatch.delenv("FLOWZ_PROGRESS", raising=False)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells), (
        "commit notebooks without outputs"
    )
    client = Recording(notebook, timeout=60, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return outputs_text(notebook)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_progress_notebook_draws_the_tree_live(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    messages: list[str] = []
    text = execute("progress.ipynb", tmp_path, monkeypatch, messages)
    assert "9900" in text  # the cell's value: the result
    # The saved output is the last frame: the finished tree, in HTML and as text.
    assert "fan" in text and "notebook-fan" in text and "succeeded" in text
    assert "double" in text and "100/100" in text and "<pre" in text
    # One output, redrawn in place: the frames after the first are updates of it.
    assert messages.count("update_display_data") >= 2, messages


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_quickstart_notebook_runs_crashes_and_resumes(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = execute("quickstart.ipynb", tmp_path, monkeypatch)
    assert "328350" in text and "100/100" in text  # the first run: result and finished tree
    assert "before the crash," in text and "of 300 children had started" in text
    assert "True children run: 300 of 300" in text  # resumed: right result, all children ran
    assert '<iframe src="http://127.0.0.1:' in text and '/runs/notebook-crash"' in text
    assert "the run page: 200 True" in text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_approval_notebook_waits_in_one_cell_for_a_send_from_another(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = execute("approval.ipynb", tmp_path, monkeypatch)
    assert "status: waiting for approval" in text
    assert "nb-order: charged 19.99" in text and "events: {'status': 'charging'}" in text
    assert "log: ['charging', 'the', 'card']" in text
