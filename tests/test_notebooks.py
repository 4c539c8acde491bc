"""The notebooks run in a real Jupyter kernel; their rendered output is checked."""

from __future__ import annotations

from pathlib import Path

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


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run notebooks/NAME in a real kernel (on the test's database); its rendered output."""
    import nbclient
    import nbformat

    monkeypatch.delenv("FLOWZ_PROGRESS", raising=False)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells), (
        "commit notebooks without outputs"
    )
    client = nbclient.NotebookClient(
        notebook, timeout=60, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return outputs_text(notebook)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_progress_notebook_shows_the_finished_tree(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = execute("progress.ipynb", tmp_path, monkeypatch)
    assert "9900" in text  # the cell's value: the result
    assert "fan" in text and "notebook-fan" in text and "succeeded" in text
    assert "double" in text and "100/100" in text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_quickstart_notebook_runs_crashes_and_resumes(
    database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text = execute("quickstart.ipynb", tmp_path, monkeypatch)
    assert "328350" in text and "100/100" in text  # the first run: result and finished tree
    assert "before the crash," in text and "of 300 children had started" in text
    assert "True children run: 300 of 300" in text  # resumed: right result, all children ran
