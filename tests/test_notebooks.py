"""The notebooks that reproduce the paper's figures execute headlessly on the committed reference run."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
REFERENCE = Path(__file__).parents[1] / "results" / "runs" / "reference"


def test_there_is_a_notebook_per_paper_figure():
    assert [p.stem.split("_", 1)[1] for p in NOTEBOOKS] == [
        "dose_anatomy_table", "visual_comparison", "unseen_dose_generalization", "daclip_embedding"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("LDCT_BENCH_RUN", str(REFERENCE))
    monkeypatch.setenv("LDCT_BENCH_NB_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "") + o.get("data", {}).get("text/plain", "")
                     for o in outputs)
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    must_show, n_images = EXPECTED[path.stem]
    assert must_show in text and images == n_images
    assert all(p.stat().st_size > 5000 for p in tmp_path.glob("*.png")) and len(list(tmp_path.glob("*.png"))) == n_images


# what each notebook must show of the reference run: a telling piece of text, and how many figures
EXPECTED = {
    "01_dose_anatomy_table": ("\\toprule", 0),
    "02_visual_comparison": ("**chest**", 3),
    "03_unseen_dose_generalization": ("unseen doses", 2),
    "04_daclip_embedding": ("Spearman rho", 1),
}
