"""Task-based image quality: the observer, the NPS and the TTF against analytic answers, the FBP chain's noise
against physics, and `run --iq` / `report` end to end (the issue's must-show)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.special import erfc

from ldct_bench.cli import main
from ldct_bench.data.iq_phantom import DISKS, NPS_ROI_MM, RODS, IQConfig, IQPhantomSet, to_pixel
from ldct_bench.iq import score_iq
from ldct_bench.metrics.task import channel_width, channelize, cho, crop, lg_channels, nps_2d, radial_nps, ttf_circular_edge

IQ_DOSES = (0.1, 0.5)
REALISATIONS = 32


def test_cho_on_white_noise_matches_the_analytic_channelized_dprime():
    """d'^2 = dv^T K^-1 dv with dv the channelized (mean-removed) disk and K = sigma^2 A A^T, A the channels applied
    after the mean removal: the trained-and-tested observer lands within 5 %."""
    rng = np.random.default_rng(0)
    size, sigma, radius = 17, 10.0, 3.66
    yy, xx = np.indices((size, size)) - size // 2
    disk = 5.0 * (np.hypot(yy, xx) <= radius)
    channels = lg_channels(size, channel_width(radius))
    a = channels.reshape(len(channels), -1) @ (np.eye(size * size) - 1 / size**2)
    dv = a @ disk.ravel()
    analytic = math.sqrt(dv @ np.linalg.solve(sigma**2 * a @ a.T, dv))
    n = 4000
    present = rng.normal(0, sigma, (n, size, size)) + disk
    absent = rng.normal(0, sigma, (n, size, size))
    det = cho(channelize(present, channels), channelize(absent, channels))
    assert det.dprime == pytest.approx(analytic, rel=0.05)
    assert det.dprime_ci[0] < analytic < det.dprime_ci[1]
    # AUC of two unit-variance normals d' apart
    assert det.auc == pytest.approx(0.5 * erfc(-analytic / 2), abs=0.01)


def test_channels_are_laguerre_gauss():
    """u_0 is a unit-norm Gaussian; the channels are orthonormal where the grid samples them."""
    u = lg_channels(65, 8.0, 5).reshape(5, -1)
    assert u @ u.T == pytest.approx(np.eye(5), abs=2e-3)


def test_nps_of_white_noise_is_flat_and_integrates_to_the_variance():
    rng = np.random.default_rng(1)
    sigma, pixel = 12.0, 0.7
    rois = rng.normal(0, sigma, (400, 32, 32))
    nps = radial_nps(nps_2d(rois, pixel), pixel)
    assert nps.noise**2 == pytest.approx(sigma**2, rel=0.02)
    assert nps.radial[1:].std() / nps.radial[1:].mean() < 0.05  # flat
    assert nps.radial[1:].mean() == pytest.approx(sigma**2 * pixel**2, rel=0.02)  # sigma^2 dx dy
    assert nps.f_mean == pytest.approx((nps.frequency**1).mean(), rel=0.05)
    assert nps.frequency[-1] == pytest.approx(0.5 / pixel)


@pytest.mark.parametrize("pixel,sigma_mm", [(0.5, 1.2), (1.367, 1.0), (1.367, 2.0)])
def test_ttf_of_a_gaussian_blurred_edge_gives_the_analytic_ttf50(pixel, sigma_mm):
    """A rod of radius 12.5 mm blurred by a Gaussian of sigma: TTF(f) = exp(-2 pi^2 sigma^2 f^2)."""
    radius, centre = 12.5 / pixel, (50.3, 49.8)
    rows, cols = np.indices((101, 101))
    r = np.hypot(rows - centre[0], cols - centre[1])
    image = 100 * 0.5 * erfc((r - radius) / (sigma_mm / pixel * math.sqrt(2)))
    ttf = ttf_circular_edge(image, *centre, radius, pixel)
    assert ttf.ttf50 == pytest.approx(math.sqrt(math.log(2) / (2 * math.pi**2 * sigma_mm**2)), rel=0.05)
    assert ttf.ttf10 == pytest.approx(math.sqrt(math.log(10) / (2 * math.pi**2 * sigma_mm**2)), rel=0.05)


@pytest.fixture(scope="module")
def iq_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("iqcache")


@pytest.fixture(scope="module")
def iq_set(iq_cache) -> IQPhantomSet:
    """The CCT189-like phantom through the default scanner, 32 realisations per class at 10 %, 50 % and full dose
    (the same set `run --iq --iq-realisations 32` finds in this cache)."""
    return IQPhantomSet.build(IQConfig(realisations=REALISATIONS), IQ_DOSES, cache_dir=iq_cache, progress=False)


@pytest.fixture(scope="module")
def ldct_scores(iq_set) -> dict[float, pd.DataFrame]:
    return {d: score_iq(iq_set.images("present", d), iq_set.images("absent", d), iq_set.geometry)[0]
            for d in (*IQ_DOSES, 1.0)}


def value(rows: pd.DataFrame, target: str, metric: str) -> float:
    return float(rows[(rows["target"] == target) & (rows["metric"] == metric)]["value"].iloc[0])


def test_the_phantom_holds_the_cct189_disks_and_the_rods(iq_set):
    truth, background = iq_set.truth("present"), iq_set.truth("absent")
    g = iq_set.geometry
    for ins in DISKS + RODS:
        row, col = (round(v) for v in to_pixel(g, ins.x, ins.y))
        assert truth[row, col] == pytest.approx(ins.hu, abs=max(2.0, 0.02 * abs(ins.hu)))
        assert background[row, col] == pytest.approx(0.0 if ins in DISKS else ins.hu, abs=max(2.0, 0.02 * abs(ins.hu)))
    assert iq_set.images("present", 0.1).shape == (REALISATIONS, g.image_size, g.image_size)


def test_fbp_noise_peaks_off_zero_and_scales_as_inverse_root_dose(iq_set, ldct_scores):
    """Ramp x Hann FBP noise: a band-pass NPS (peak above zero), magnitude ~ dose^-1/2 (within 10 %), and the NPS
    integral equals the ROIs' variance about the ensemble mean."""
    for d, rows in ldct_scores.items():
        assert value(rows, "uniform", "nps_fpeak") > 0.05, d
    noise = {d: value(rows, "uniform", "nps_noise") for d, rows in ldct_scores.items()}
    assert noise[0.1] / noise[1.0] == pytest.approx(math.sqrt(10), rel=0.10)
    assert noise[0.5] / noise[1.0] == pytest.approx(math.sqrt(2), rel=0.10)
    g = iq_set.geometry
    rois = crop(iq_set.images("absent", 0.1), *to_pixel(g, 0, 0), round(NPS_ROI_MM / g.pixel_mm / 2))
    variance = ((rois - rois.mean(0)) ** 2).sum(0).mean() / (len(rois) - 1)
    assert radial_nps(nps_2d(rois, g.pixel_mm), g.pixel_mm).noise ** 2 == pytest.approx(variance, rel=0.02)


def test_ldct_detectability_rises_with_dose_for_every_disk(ldct_scores):
    for disk in DISKS:
        d = [value(ldct_scores[dose], disk.name, "cho_dprime") for dose in (*IQ_DOSES, 1.0)]
        assert d[0] < d[1] < d[2], (disk.name, d)


def test_ttf_of_the_ensemble_mean_is_the_noiseless_ttf(iq_set, ldct_scores):
    """FBP is linear: the ensemble mean's TTF is the truth's (within 5 % at 50 %), whatever the dose."""
    g = iq_set.geometry
    for rod in RODS:
        truth = ttf_circular_edge(iq_set.truth("absent"), *to_pixel(g, rod.x, rod.y), rod.radius / g.pixel_mm,
                                  g.pixel_mm)
        assert value(ldct_scores[1.0], rod.name, "ttf50") == pytest.approx(truth.ttf50, rel=0.05), rod.name


def test_run_iq_writes_the_task_metrics_and_the_report_shows_them(iq_set, iq_cache, tiny_dataset, tmp_path):
    """The issue's must-show (head only, 32 realisations, to stay quick): ldct and the committed DnCNN, the quickest
    network that smooths (its matrix on the tiny phantoms, which are simulated already; the image-quality phantom
    goes through the default scanner)."""
    out = tmp_path / "run"
    args = ["run", "--methods", "ldct,dncnn", "--doses", "10,50", "--anatomies", "head", "--data",
            str(tiny_dataset.root), "--train-data", "embedded", "--iq", "--iq-realisations",
            str(REALISATIONS), "--out", str(out), "--cache-dir", str(iq_cache)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    iq = pd.read_parquet(out / "iq.parquet")
    metrics = {"cho_auc", "cho_dprime", "nps_fpeak", "nps_fmean", "nps_noise", "nps_fmean_shift", "ttf50", "ttf10"}
    for method in ("ldct", "dncnn"):
        for dose in IQ_DOSES:
            cell = iq[(iq["method"] == method) & (iq["dose"] == dose)]
            assert set(cell["metric"]) == metrics
            assert set(cell["target"]) == {d.name for d in DISKS} | {r.name for r in RODS} | {"uniform"}
            assert cell["value"].notna().all() and cell["seen_dose"].all()
    ldct = iq[iq["method"] == "ldct"]
    assert value(ldct[ldct["dose"] == 0.5], "10mm/3HU", "cho_dprime") > value(ldct[ldct["dose"] == 0.1], "10mm/3HU",
                                                                               "cho_dprime")
    dncnn = iq[(iq["method"] == "dncnn") & (iq["dose"] == 0.1)]
    print("DnCNN at 10 %: NPS mean-frequency shift", value(dncnn, "uniform", "nps_fmean_shift"), "noise",
          value(dncnn, "uniform", "nps_noise"), "input noise", value(ldct[ldct["dose"] == 0.1], "uniform", "nps_noise"))
    # smoothing coarsens the noise: the clinical DnCNN shifts its NPS mean frequency by -0.017 and halves its noise
    # (17.6 against 36.1 HU)
    assert value(dncnn, "uniform", "nps_fmean_shift") < -0.01
    assert value(dncnn, "uniform", "nps_noise") < value(ldct[ldct["dose"] == 0.1], "uniform", "nps_noise") / 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["iq"]["config"]["realisations"] == REALISATIONS and "dncnn.iq_denoise_s" in manifest["timings"]

    again = CliRunner().invoke(main, args)  # resumes: nothing is left to do, nothing changes
    assert again.exit_code == 0 and "already done" in again.output
    assert pd.read_parquet(out / "iq.parquet").equals(iq)
    results = pd.read_parquet(out / "results.parquet")
    for shards in ("cells", "iq"):  # the run as a clone holds it: .gitignore keeps the per-cell files out
        shutil.rmtree(out / shards)
    cloned = CliRunner().invoke(main, args)  # still nothing to do (it scored everything again), nothing changes
    assert cloned.exit_code == 0 and cloned.output.count("already done") == 2, cloned.output
    assert pd.read_parquet(out / "iq.parquet").equals(iq) and pd.read_parquet(out / "results.parquet").equals(results)
    other = CliRunner().invoke(main, args[:-5] + ["8", "--out", str(out), "--cache-dir", str(iq_cache)])
    assert other.exit_code != 0 and "another image-quality set" in other.output

    report = tmp_path / "report"
    assert CliRunner().invoke(main, ["report", str(out), "--out", str(report)]).exit_code == 0
    md = (report / "task_based.md").read_text()
    assert "Low-contrast detectability (CHO d′)" in md and "Noise texture (NPS) and resolution (TTF)" in md
    assert md.count("| dncnn |") == 4 and "| full dose | full dose |" in md
    for name in ("iq_dprime", "iq_nps", "iq_ttf"):
        assert (report / "figures" / f"{name}.png").stat().st_size > 10_000
    html = (report / "report.html").read_text()
    assert "Task-based image quality" in html and "CHO d′ of the CCT189-like disks" in html
    assert "\\caption{Low-contrast detectability" in (report / "task_based.tex").read_text()
