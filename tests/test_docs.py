"""The README and the documentation site: the README fits on a screen and its leaderboard is the one the reference
run's store gives; the site (built by `.ci/run` with `mkdocs build --strict`, or here) lays out in Chromium at
1280 px with every image decoded."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ldct_bench.report.site import README_END, README_START, readme_tables

from .test_report import LAYOUT_PROBE, chromium

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_fits_on_a_screen_and_its_leaderboard_is_the_stores():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    tables = readme_tables()
    block = readme.split(README_START, 1)[1].split(README_END, 1)[0].lstrip("\n")
    assert block == tables["reference leaderboard"], ("README's table differs from the store: run python -m "
                                                      "ldct_bench.report.site")
    assert "| redcnn |" in block and "(unseen)" in block
    for name, table in tables.items():  # the equal-compute and generalization tables too (#31)
        generated = readme.split(f"<!-- generated: {name} -->", 1)[1].split(README_END, 1)[0].lstrip("\n")
        assert generated == table, f"README's {name} differs from the store: run python -m ldct_bench.report.site"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The built site: `site/` where .ci/run built it, else built here."""
    built = ROOT / "site"
    if (built / "index.html").is_file():
        return built
    if shutil.which("mkdocs") is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]'; .ci/run installs it)")
    out = tmp_path_factory.mktemp("site")
    subprocess.run(["mkdocs", "build", "--strict", "-q", "-d", str(out)], cwd=ROOT, check=True, timeout=600)
    return out


@pytest.mark.parametrize("page", ["index.html", "tutorial/index.html", "results/reference-report/index.html"])
def test_the_site_reads_in_a_real_browser_at_1280_px(site, page, tmp_path):
    browser = chromium()
    source = site / page
    probe = source.with_name(f"probe-{tmp_path.name}.html")  # beside the page: its relative assets resolve
    probe.write_text(source.read_text().replace("</body>", f"<script>{LAYOUT_PROBE}</script></body>"))
    try:
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,4000",
                              "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], capture_output=True,
                             text=True, timeout=120).stdout
    finally:
        probe.unlink()
    found = json.loads(html.unescape(re.search(r'<pre id="layout-probe">([^<]*)', dom).group(1)))
    assert found["page"] <= found["viewport"], f"{page} scrolls sideways"
    assert all(found["figures"]), f"{page}: an image did not decode"
    if page.startswith("results/"):
        assert len(found["figures"]) >= 5 and len(found["tables"]) >= 6
