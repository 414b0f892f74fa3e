"""The notebook runs top to bottom on a fresh kernel of this interpreter and ends with a completed run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# The notebook runs in a kernel: long-running, so outside the quick loop.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "continual_learning.ipynb"


def _stream_text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o["output_type"] == "stream")


def test_the_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_notebook_runs_and_shows_a_completed_maintenance_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel "python3" is pinned to this interpreter: a user-level kernelspec of that name could
    # point at another Python, and JUPYTER_PATH is searched before it.
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for key in [k for k in os.environ if k.startswith(("LANGSMITH_", "LANGCHAIN_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("CL_PLUGIN_DATABASE_URL", f"sqlite:///{tmp_path / 'notebook.db'}")
    monkeypatch.setenv("CL_PLUGIN_MODEL_DIR", str(tmp_path / "models"))
    work = tmp_path / "work"
    work.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o["output_type"] == "error"]
    text = "\n".join(_stream_text(c) for c in code)
    assert "400 interactions in the store" in text
    assert "data set drifted: True" in text
    assert "retraining: completed" in text
    assert "retrained  after drift" in text
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2  # the time series with the agent mix, and the reliability diagram
    assert any(
        line.startswith("maintenance run ") and line.endswith(": completed") for line in text.splitlines()
    )
    assert (tmp_path / "notebook.db").is_file()
