"""Reports: numbers equal a direct pandas aggregation of the store; marks, LaTeX shape, HTML escaping, figures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ldct_bench.report import make_report
from ldct_bench.report.leaderboard import build_leaderboard, to_latex, to_markdown
from ldct_bench.results import RunStore

EVIL = "<script>alert(1)</script>"
METHODS = ["ldct", "good", EVIL]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = RunStore(tmp_path_factory.mktemp("runs") / "fake")
    rng = np.random.default_rng(0)
    offset = {"ldct": 0.0, "good": 3.0, EVIL: 1.5}
    for m in METHODS:
        for anatomy in ("chest", "head"):
            for dose, seen in ((0.1, True), (0.25, False)):
                rows = []
                for metric, base, scale in (("psnr", 30, 1), ("ssim", 0.8, 0.01), ("rmse", 40, -2)):
                    v = base + scale * offset[m] + rng.normal(0, 0.2 * abs(scale), 6)
                    rows.append(pd.DataFrame({"run": "fake", "method": m, "anatomy": anatomy, "dose": dose, "seen": seen,
                                              "patient": ["p1"] * 3 + ["p2"] * 3, "slice": list(range(6)),
                                              "window": "founddiff", "metric": metric, "value": v}))
                st.write_cell(m, anatomy, dose, pd.concat(rows))
                img = rng.normal(0, 50, (64, 64)).astype(np.float32)
                st.write_examples(m, anatomy, dose, {"pred": img[None]})
                st.write_examples("_input", anatomy, dose, {"ld": img[None], "fd": img[None]})
    st.write_manifest({"config": {"methods": METHODS, "note": EVIL}})
    st.consolidate()
    return st


def test_leaderboard_numbers_equal_pandas(store):
    t = store.table()
    lb = build_leaderboard(t, "psnr", "founddiff")
    direct = t[t.metric == "psnr"].groupby(["method", "anatomy", "dose"])["value"].agg(["mean", "std"])
    for m in METHODS:
        for c in lb.columns():
            assert lb.mean.at[m, c] == pytest.approx(direct.loc[(m, *c), "mean"])
            assert lb.std.at[m, c] == pytest.approx(direct.loc[(m, *c), "std"])
    assert lb.mean.index[0] == "good" and lb.overall_rank["good"] == 1
    assert [c[1] for c in lb.columns()] == [0.1, 0.1, 0.25, 0.25]  # seen doses first


def test_bold_marks_the_true_best_per_column(store):
    t = store.table()
    for metric in ("psnr", "rmse"):
        lb = build_leaderboard(t, metric, "founddiff")
        md = to_markdown(lb)
        for c in lb.columns():
            col = lb.mean[c]
            best = col.idxmax() if metric == "psnr" else col.idxmin()
            assert lb.rank.at[best, c] == 1
        row = next(line for line in md.splitlines() if line.startswith("| good"))
        assert row.count("**") == 2 * len(lb.columns())  # good is best everywhere, in both directions


def test_latex_table_shape_and_compiles_when_tex_is_there(store, tmp_path):
    lb = build_leaderboard(store.table(), "ssim", "founddiff")
    tex = to_latex(lb)
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0].strip().splitlines()
    assert len(body) == 3 and all(line.count("&") == 1 + 4 for line in body)  # method + 4 cells + rank
    assert tex.count("\\multicolumn{1}{c}") == 4 and "\\cmidrule(lr){2-2} \\cmidrule(lr){3-3}" in tex  # anatomy groups
    assert "<script>" in tex  # LaTeX has no HTML; the name is printed literally, specials escaped
    assert "\\caption{SSIM" in tex and "founddiff window" in tex
    engine = shutil.which("pdflatex")
    if engine:
        doc = tmp_path / "t.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs,graphicx}\\begin{document}" + tex + "\\end{document}")
        compiled = subprocess.run([engine, "-interaction=nonstopmode", doc.name], cwd=tmp_path, capture_output=True)
        assert compiled.returncode == 0


def test_html_is_self_contained_and_escaped(store, tmp_path):
    files = make_report([store.root], tmp_path / "rep")
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script>") == 1  # only the page's own sorting script
    assert "src=\"http" not in html and "href=\"http" not in html  # no external assets
    for m in ("ldct", "good"):
        assert f"<td>{m}</td>" in html
    for label in ("chest 10%", "head 25% (unseen)"):
        assert label in html
    assert {p.name for p in files} >= {"leaderboard.md", "leaderboard.tex", "leaderboard.csv", "report.html"}


def test_figures_are_written_with_the_expected_size(store, tmp_path):
    make_report([store.root], tmp_path / "rep", formats=("md",))
    fig = tmp_path / "rep" / "figures"
    for name in ("dose_curves_psnr", "box_psnr", "grid_chest"):
        png, pdf = fig / f"{name}.png", fig / f"{name}.pdf"
        assert png.stat().st_size > 5000 and pdf.stat().st_size > 1000
    w, h = Image.open(fig / "dose_curves_psnr.png").size
    assert (w, h) == (840, 340)  # 2 anatomies x 4.2 in wide, 3.4 in high, 100 dpi


def test_several_runs_are_labelled(store, tmp_path):
    other = tmp_path / "second"
    shutil.copytree(store.root, other)
    make_report([store.root, other], tmp_path / "rep", formats=("md",))
    md = (tmp_path / "rep" / "leaderboard.md").read_text()
    assert "good [fake]" in md and "good [second]" in md


def test_reference_report_renders_in_headless_chromium(tmp_path):
    """The committed reference report, opened in a real browser, draws its tables and figures (skipped without one)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium here (apt-get install chromium)")
    page = Path(__file__).parents[1] / "results" / "runs" / "reference" / "report" / "report.html"
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri()], capture_output=True, timeout=120)
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (4000, 1280)
    inked = (img < 128).mean(axis=1) > 0.002  # rows with text, table rules or plot content
    assert inked[:1000].mean() > 0.3 and inked[1500:4000].mean() > 0.3  # the tables, then the figures below them
