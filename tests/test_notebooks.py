"""The notebooks in notebooks/ run top to bottom (on reduced settings) and show what they promise.

Each notebook reads ``SALIGHTNING_NOTEBOOK_QUICK=1`` in its parameter cell and shrinks its
training to a few tiny batches; ``SALIGHTNING_NOTEBOOK_OUT`` sends whatever it writes to a
temporary folder. The kernel is the ``python3`` kernel of the running interpreter (ipykernel).
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_edge_maps.ipynb", "02_sa_loss_at_work.ipynb", "03_results.ipynb"]
CELL_TIMEOUT = 300


def _execute(name: str, out: Path, monkeypatch: pytest.MonkeyPatch):
    """Run a notebook in a fresh kernel whose working folder is notebooks/, as Jupyter would."""
    monkeypatch.setenv("SALIGHTNING_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("SALIGHTNING_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one thread per test process, like conftest.py
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    before = sorted(NOTEBOOKS.rglob("*"))
    client.execute()  # raises CellExecutionError, naming the cell, on the first error
    assert sorted(NOTEBOOKS.rglob("*")) == before, f"{name} wrote into {NOTEBOOKS}"
    return nb


def _outputs(nb, kind: str) -> list[str]:
    """The outputs of one MIME type (``image/png``, ``text/markdown``) or of a stream (``stdout``)."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == kind:
                found.append(output["text"])
            elif kind in output.get("data", {}):
                found.append(output["data"][kind])
    return found


def test_notebooks_are_stored_without_outputs():
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"
        assert "SALIGHTNING_NOTEBOOK_QUICK" in nb.cells[1].source, f"{name}: the parameter cell must read the quick switch"


@pytest.mark.slow
def test_edge_maps_notebook(tmp_path, monkeypatch):
    nb = _execute("01_edge_maps.ipynb", tmp_path, monkeypatch)
    assert len(_outputs(nb, "image/png")) >= 6  # photos, LV grid, delta sweep, Canny grid, Sobel, weights
    table = "\n".join(_outputs(nb, "text/markdown"))
    for extractor in ("local variance 5×5", "Canny (100, 200)", "Sobel"):
        assert extractor in table
    assert table.count("\n| ") >= 16  # 4 extractors x 4 photos
    opencv = "\n".join(_outputs(nb, "stdout"))
    assert "differ from cv2.Canny" in opencv or "OpenCV is not installed" in opencv
    assert not any(tmp_path.iterdir())  # this notebook writes nothing


@pytest.mark.slow
def test_sa_loss_notebook(tmp_path, monkeypatch):
    nb = _execute("02_sa_loss_at_work.ipynb", tmp_path, monkeypatch)
    assert len(_outputs(nb, "image/png")) >= 3  # curves, crops, error change
    text = "\n".join(_outputs(nb, "stdout"))
    assert "plain L1: 3 batches" in text and "SA L1 (local variance): 3 batches" in text
    assert "beta = 0," in text  # the plain run has no SA term
    table = "\n".join(_outputs(nb, "text/markdown"))
    for model in ("bicubic", "stage 1 (start)", "plain L1", "SA L1 (local variance)"):
        assert f"| {model} |" in table
    assert "coffee" in table and "rocket" in table


@pytest.mark.slow
def test_results_notebook(tmp_path, monkeypatch):
    nb = _execute("03_results.ipynb", tmp_path, monkeypatch)
    table = "\n".join(_outputs(nb, "text/markdown"))
    for model in ("bicubic", "ESRGAN-tiny", "SA-ESRGAN-tiny (lv)"):
        assert f"| {model} |" in table
    assert "PSNR" in table and "samples" in table
    assert _outputs(nb, "image/png")  # the comparison figure, displayed
    out = tmp_path / "03_results"
    assert (out / "comparison.png").stat().st_size > 0
    assert "ESRGAN-tiny" in (out / "evaluation" / "results.md").read_text(encoding="utf-8")
    assert (out / "evaluation" / "results.csv").read_text(encoding="utf-8").startswith("model,scale")
    for run in ("esrgan_tiny", "sa_esrgan_tiny_lv"):
        assert list((out / run / "checkpoints").glob("best-*.ckpt"))
