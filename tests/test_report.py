"""Reports: numbers equal a direct aggregation of the store (means, patient-bootstrap CIs, Holm-corrected per-patient
tests); captions say what the numbers mean; marks, LaTeX shape, HTML escaping, figures, cost."""

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
                    for reference, shift in (("full_dose", 0.0), ("truth", 5.0 * scale)):
                        rows.append(pd.DataFrame({
                            "run": "fake", "method": m, "anatomy": anatomy, "dose": dose, "seen_dose": seen,
                            "seen_anatomy": anatomy != "head", "seen_data": True, "acquisition": "default",
                            "seen_acquisition": True,
                            "patient": ["p1"] * 3 + ["p2"] * 3, "slice": list(range(6)), "reference": reference,
                            "window": "founddiff", "metric": metric, "value": v + shift}))
                st.write_cell(m, anatomy, dose, pd.concat(rows))
                img = rng.normal(0, 50, (64, 64)).astype(np.float32)
                st.write_examples(m, anatomy, dose, {"pred": img[None]})
                st.write_examples("_input", anatomy, dose, {"ld": img[None], "fd": img[None]})
    st.write_manifest({"config": {"methods": METHODS, "note": EVIL}, "timings": {"good.denoise_s": 2.4},
                       "methods": {"good": {"parameters": 2_000_000, "config": {"x": 1},
                                            "training": {"training_flops": 3e15}}}})
    st.consolidate()
    return st


def test_leaderboard_numbers_equal_a_direct_aggregation(store):
    from scipy import stats as sps

    from ldct_bench.metrics.stats import bootstrap_ci, holm

    t = store.table()
    lb = build_leaderboard(t, "psnr", "founddiff")
    fd = t[(t.metric == "psnr") & (t.reference == "full_dose")]
    direct = fd.groupby(["method", "anatomy", "dose"])["value"].mean()
    for m in METHODS:
        for c in lb.columns():
            rows = fd[(fd.method == m) & (fd.anatomy == c[0]) & (fd.dose == c[1])]
            assert lb.mean.at[m, c] == pytest.approx(direct.loc[(m, *c)])
            assert (lb.ci_lo.at[m, c], lb.ci_hi.at[m, c]) == bootstrap_ci(rows.value.to_numpy(), rows.patient.to_numpy())
    assert lb.mean.index[0] == "good" and lb.overall_rank["good"] == 1 and set(lb.n_patients) == {2}
    assert [c[1] for c in lb.columns()] == [0.1, 0.25, 0.1, 0.25]  # anatomy by anatomy, each in dose order
    # the tests: paired t-tests of per-patient means against the column's best, Holm-corrected over the table
    raw = []
    for c in lb.columns():
        cell = fd[(fd.anatomy == c[0]) & (fd.dose == c[1])].groupby(["method", "patient"])["value"].mean().unstack(0)
        raw += [sps.ttest_rel(cell[m], cell["good"]).pvalue for m in ("ldct", EVIL)]
    ours = [lb.p_value.at[m, c] for c in lb.columns() for m in ("ldct", EVIL)]
    np.testing.assert_allclose(ours, holm(raw))
    truth = build_leaderboard(t, "psnr", "founddiff", reference="truth")
    assert truth.mean.at["good", lb.columns()[0]] == pytest.approx(lb.mean.at["good", lb.columns()[0]] + 5)


def test_holm_is_the_step_down_bonferroni():
    from ldct_bench.metrics.stats import holm

    # sorted 0.01, 0.02, 0.03, 0.04 -> 4 x 0.01, 3 x 0.02, 2 x 0.03 (then max so far), 1 x 0.04
    np.testing.assert_allclose(holm([0.04, 0.01, 0.03, 0.02]), [0.06, 0.04, 0.06, 0.06])
    assert np.isnan(holm([0.5, np.nan])[1]) and holm([0.5, np.nan])[0] == 0.5  # NaN is not a test


def test_captions_say_reference_n_ci_test_and_cost(store, tmp_path):
    make_report([store.root], tmp_path / "rep", formats=("md", "latex"), draw=False)  # tables alone: the figures
    md = (tmp_path / "rep" / "leaderboard.md").read_text()  # have their own test
    for text in ("against the full-dose scan", "n = 2 patients per cell", "patient-cluster bootstrap CI",
                 "paired t-test on per-patient means, Holm-corrected", "params (M)", "train FLOPs", "ms/slice"):
        assert text in md, text
    good = next(line for line in md.splitlines() if line.startswith("| good"))
    assert good.endswith("| 2.00 | 3e+15 | 100 |")  # 2.4 s over 24 slices; params in millions
    by_dose = (tmp_path / "rep" / "leaderboard_by_dose.md").read_text()
    assert "all (with unseen anatomies) 10%" in by_dose and "n = 4 patients per cell" in by_dose  # 2 x 2 pooled
    truth = make_report([store.root], tmp_path / "truth", formats=("md",), reference="truth", unit="slice",
                        draw=False)
    md = (tmp_path / "truth" / "leaderboard.md").read_text()
    assert "against the noiseless truth" in md and "Wilcoxon signed-rank test over slices" in md and truth


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
    assert tex.count("\\multicolumn{2}{c}") == 2 and "\\cmidrule(lr){2-3} \\cmidrule(lr){4-5}" in tex  # anatomy groups
    assert "<script>" in tex  # LaTeX has no HTML; the name is printed literally, specials escaped
    assert "\\caption{SSIM" in tex and "window founddiff" in tex and "n = 2 patients" in tex
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
    for label in ("chest 10%", "head (unseen anatomy) 25% (unseen)"):
        assert label in html
    assert {p.name for p in files} >= {"leaderboard.md", "leaderboard.tex", "leaderboard.csv", "report.html"}


def test_figures_are_written_with_the_expected_size(store, tmp_path):
    """PNG always; the PDF twin that LaTeX includes only for a report asked for LaTeX."""
    for formats in (("md",), ("md", "latex")):
        make_report([store.root], tmp_path / formats[-1], formats=formats)
        fig = tmp_path / formats[-1] / "figures"
        for name in ("dose_curves_psnr", "box_psnr", "grid_chest"):
            png, pdf = fig / f"{name}.png", fig / f"{name}.pdf"
            assert png.stat().st_size > 5000
            assert pdf.stat().st_size > 1000 if "latex" in formats else not pdf.exists()
    w, h = Image.open(fig / "dose_curves_psnr.png").size
    assert (w, h) == (840, 340)  # 2 anatomies x 4.2 in wide, 3.4 in high, 100 dpi


def test_several_runs_are_labelled(store, tmp_path):
    other = tmp_path / "second"
    shutil.copytree(store.root, other)
    make_report([store.root, other], tmp_path / "rep", formats=("md",), draw=False)
    md = (tmp_path / "rep" / "leaderboard.md").read_text()
    assert "good [fake]" in md and "good [second]" in md


LAYOUT_PROBE = """
window.addEventListener('load', () => {
  const tables = [...document.querySelectorAll('table')].map(t => ({
    width: t.getBoundingClientRect().width, room: t.parentElement.getBoundingClientRect().width,
    heads: [...t.querySelectorAll('th')].map(th => [th.textContent, th.className])}));
  const pre = document.createElement('pre');
  pre.id = 'layout-probe';
  const figures = [...document.images].map(im => im.complete && im.naturalWidth > 0 && im.width > 0);
  // the grid figures' error-map block (their lower 40 %): the share of lit colour-map pixels (red above 100 and
  // saturated: not the white background, not grey)
  const errorMaps = [...document.images].filter(im => /visual comparison/.test(im.alt)).map(im => {
    const c = document.createElement('canvas');
    c.width = im.naturalWidth; c.height = im.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(im, 0, 0);
    try {
      const y0 = Math.floor(0.62 * c.height), d = g.getImageData(0, y0, Math.floor(0.9 * c.width), c.height - y0).data;
      let bright = 0;
      for (let i = 0; i < d.length; i += 4) {
        const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
        if (d[i] > 100 && hi - lo > 40) bright++;
      }
      return bright / (d.length / 4);
    } catch (e) { return null; }
  });
  pre.textContent = JSON.stringify({tables, figures, errorMaps, page: document.documentElement.scrollWidth,
                                    viewport: document.documentElement.clientWidth});
  document.body.appendChild(pre);
});
"""


def chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium here (apt-get install chromium; .ci/run installs it)")
    return browser


def test_the_report_reads_in_a_real_browser_at_1280_px(tmp_path):
    """A report made here from the reference run's scores, laid out by Chromium at 1280 px: every figure is decoded
    and drawn, no table is wider than the page (wide leaderboards are split per anatomy, CIs under their means), and
    every leaderboard lists its doses in dose order with the held-out ones marked."""
    import html
    import json
    import re

    browser = chromium()
    root = Path(__file__).parents[1] / "results" / "runs" / "reference"
    make_report([root], tmp_path / "rep", formats=("html",))
    page = (tmp_path / "rep" / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", f"<script>{LAYOUT_PROBE}</script></body>"))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,4000",
                          "--allow-file-access-from-files", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = json.loads(html.unescape(re.search(r'<pre id="layout-probe">([^<]*)', dom).group(1)))
    assert len(found["figures"]) >= 10 and all(found["figures"]), found["figures"]
    # the error maps are scaled to their own errors: not uniformly dark (3-11 % of the block lit; on the old
    # 0-750 HU scale of the lung window, the chest's had none)
    assert len(found["errorMaps"]) == 3 and all(share is not None and share > 0.02 for share in found["errorMaps"]), \
        found["errorMaps"]
    assert found["page"] <= found["viewport"], "the page scrolls sideways"
    assert len(found["tables"]) >= 12
    for t in found["tables"]:
        assert t["width"] <= t["room"] + 1, (t["width"], t["room"], t["heads"][:3])
        doses = [(float(m.group(1)), "unseen" in cls) for text, cls in t["heads"]
                 if (m := re.search(r"(\d+(?:\.\d+)?)%", text)) and ("(unseen)" in text) == ("unseen" in cls)]
        assert [d for d, _ in doses] == sorted(d for d, _ in doses)  # dose order
    marked = [h for t in found["tables"] for h in t["heads"] if "unseen" in h[1]]
    assert marked and all("(unseen)" in text for text, _ in marked)


def test_grid_figure_titles_clear_the_dose_labels(tmp_path, monkeypatch):
    """The grid figures' title sits above the dose labels of the top row (it once ran over them)."""
    from ldct_bench.report import figures

    caught = {}
    monkeypatch.setattr(figures, "save", lambda fig, path, dpi=100: caught.setdefault("fig", fig) and [])
    root = Path(__file__).parents[1] / "results" / "runs" / "reference"
    figures.visual_grid(RunStore(root), ["corediff", "founddiff", "redcnn", "wgan-mse"], "chest",
                        [0.05, 0.1, 0.25, 0.5], tmp_path / "grid")
    fig = caught["fig"]
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        label = ax.title.get_window_extent(renderer)
        if ax.title.get_text():
            assert title.y0 >= label.y1 - 0.5, (ax.title.get_text(), title, label)


def test_the_error_maps_colour_bar_is_the_99th_percentile_rounded_up():
    from ldct_bench.report.figures import error_scale

    errors = np.arange(1001, dtype=float) * 0.1  # 0 .. 100 HU: 99th percentile 99
    assert error_scale(errors) == 100.0
    assert error_scale(errors * 0.3) == 50.0  # 29.7 -> 50
    assert error_scale(errors * 0.013) == 2.0  # 1.29 -> 2
    assert error_scale(np.zeros(10)) == 1.0 and error_scale(np.array([])) == 1.0
