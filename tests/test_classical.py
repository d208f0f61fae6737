"""The training-free references (BM3D, NLM, TV) and the noise estimate they read: against the simulator's known noise,
against their input, and through a run's --set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import ndimage

from ldct_bench.cli import main
from ldct_bench.methods import get_method
from ldct_bench.metrics.engine import score_batch
from ldct_bench.metrics.windows import WINDOWS
from ldct_bench.selection import resolve_methods
from ldct_bench.toolkit import estimate_noise_sd

CLASSICAL = ("tv", "nlm", "bm3d")


def test_noise_estimate_of_white_noise_on_a_body_with_edges_is_what_two_haar_levels_hold():
    """Two Haar levels hold 3/4 + 3/16 of white noise's variance (the estimator is made for FBP's ramp-shaped noise,
    nearly all of it in those levels): sqrt(15/16) of the SD, within 3 %, at any level and beside edges."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    body = np.where((yy - 128) ** 2 + (xx - 128) ** 2 < 100 ** 2, 40.0, -1000.0)
    body[(yy - 100) ** 2 + (xx - 140) ** 2 < 20 ** 2] = 300.0  # a bright organ: edges the flat mask must avoid
    for sd in (5.0, 20.0, 80.0):
        assert estimate_noise_sd(body + rng.normal(0, sd, body.shape)) == pytest.approx(sd * (15 / 16) ** 0.5, rel=0.03)
    assert estimate_noise_sd(body) < 0.5  # no noise: the edges are not read as noise


def test_noise_estimate_is_within_15_percent_of_the_simulators_sd_on_flat_regions(reference_sample):
    """Every (anatomy, dose) of fresh test patients: the estimate from the low-dose slice alone against the SD of
    (low dose - noiseless truth) over flat soft tissue of the truth."""
    ds = reference_sample
    for anatomy in ds.anatomies:
        for dose in ds.doses(anatomy):
            pairs = ds.pairs([anatomy], (dose,), "test", truth=True)
            ratios = []
            for ld, truth in zip(pairs.ld[:, 0].double().numpy(), pairs.truth[:, 0].double().numpy()):
                g = ndimage.gaussian_gradient_magnitude(truth, 1.5)
                flat = ndimage.binary_erosion((truth > -300) & (truth < 300) & (g < 5), iterations=2)
                ratios.append(estimate_noise_sd(ld) / np.std((ld - truth)[flat]))
            assert abs(np.mean(ratios) - 1) < 0.15, (anatomy, dose, ratios)


@pytest.mark.parametrize("name", ["tv", "nlm", pytest.param("bm3d", marks=pytest.mark.slow)])  # bm3d: ~3 s a slice
def test_training_free_methods_beat_their_input_at_5_and_10_percent(name, reference_sample):
    method = get_method(name)()
    for dose in (0.05, 0.1):
        pairs = reference_sample.pairs(reference_sample.anatomies, (dose,), "test")
        scores = {}
        for label, image in (("input", pairs.ld[:, :1]), (name, method.denoise(pairs.ld))):
            s = score_batch(image, pairs.fd, [WINDOWS["founddiff"]], metrics=("psnr",))
            scores[label] = float(s[("founddiff", "psnr")].mean())
        assert scores[name] > scores["input"] + 1.0, (dose, scores)


@pytest.mark.parametrize("name", ["tv", "nlm", "bm3d"])
def test_a_noiseless_slice_passes_through_a_training_free_method(name):
    """A truth reads no noise: its strength is that of a tenth of a HU (toolkit.filter_noise_sd), not 0, which
    divided by zero in TV."""
    cls = get_method(name)
    method = cls(cls.configure("quick", {}, "")).for_inference()
    truth = torch.from_numpy(np.where(np.hypot(*np.mgrid[-32:32, -32:32]) < 20, 40.0, 0.0)).float()[None, None]
    out = method.denoise(truth)
    assert torch.isfinite(out).all() and float((out - truth).abs().max()) < 0.5


def test_bm3d_denoises_and_a_stronger_setting_smooths_more():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    clean = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 25 ** 2, 40.0, -1000.0)
    noisy = torch.from_numpy(clean + rng.normal(0, 30, clean.shape)).float()[None, None]
    cls = get_method("bm3d")
    weak, strong = (cls(cls.Config.profile("quick", strength=s)).denoise(noisy)[0, 0].numpy() for s in (0.5, 1.0))
    error = {k: np.sqrt(np.mean((v - clean)[16:48, 16:48] ** 2)) for k, v in (("weak", weak), ("strong", strong))}
    assert error["strong"] < 30 / 5 < error["weak"]  # at the noise's own SD BM3D removes it; at half, most stays


def test_all_leaves_out_bm3d_and_methods_says_why():
    assert {"tv", "nlm"} <= set(resolve_methods("all")) and "bm3d" not in resolve_methods("all")
    out = CliRunner().invoke(main, ["methods"]).output
    line = next(x for x in out.splitlines() if x.startswith("bm3d"))
    assert "not in 'all'" in line and "s a slice" in line
    assert "quick profile: strength=" in out.split("nlm", 1)[1]


def test_a_runs_set_reaches_a_training_free_method(tiny_dataset, tmp_path):
    """--set tv.strength=1e-6 makes TV all but the identity: its rows equal the input's; the manifest records it."""
    import json

    import pandas as pd

    args = ["run", "--methods", "ldct,tv", "--doses", "10", "--anatomies", "chest", "--data", str(tiny_dataset.root)]
    result = CliRunner().invoke(main, args + ["--set", "tv.strength=1e-6", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(tmp_path / "run" / "results.parquet")
    key = ["anatomy", "dose", "patient", "slice", "reference", "window", "metric"]
    tv, ldct = (table[table.method == m].set_index(key)["value"].sort_index() for m in ("tv", "ldct"))
    np.testing.assert_allclose(tv.to_numpy(), ldct.to_numpy(), atol=1e-4)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["methods"]["tv"]["config"] == {"strength": 1e-6, "iterations": 100}
    bad = CliRunner().invoke(main, args + ["--set", "tv.strength=0", "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "strength takes a number in (0, 100]" in bad.output
    assert not (tmp_path / "bad").exists()
