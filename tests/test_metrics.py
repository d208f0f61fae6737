"""The metric engine against scikit-image, piq and scipy; and its errors on bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ldct_bench.metrics import METRICS, WINDOWS, Window, get_metric, register_metric, score_batch
from ldct_bench.metrics.stats import bootstrap_ci, compare_to_best, paired_test, summarize


def _random_pair(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(n, 1, size, size, generator=g) * 400
    return ref + torch.randn(ref.shape, generator=g) * 60, ref


def _phantom_pair(tiny_dataset):
    pairs = tiny_dataset.pairs(["abdomen", "head"], [0.1], "test")
    return pairs.ld[:4], pairs.fd[:4]


def _skimage(pred, ref, w: Window):
    """Reference numbers: scikit-image on the window, shifted so its lower bound is 0."""
    out = {"psnr": [], "ssim": [], "ssim_uniform": [], "rmse": []}
    for p, r in zip(pred[:, 0].double().numpy(), ref[:, 0].double().numpy()):
        p, r = np.clip(p, w.lo, w.hi) - w.lo, np.clip(r, w.lo, w.hi) - w.lo
        out["psnr"].append(peak_signal_noise_ratio(r, p, data_range=w.width))
        out["ssim"].append(structural_similarity(r, p, data_range=w.width, gaussian_weights=True, sigma=1.5,
                                                 use_sample_covariance=False))
        out["ssim_uniform"].append(structural_similarity(r, p, data_range=w.width))
        out["rmse"].append(np.sqrt(np.mean((p - r) ** 2)))
    return out


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("source", ["random", "phantom"])
def test_fidelity_equals_scikit_image(window, source, tiny_dataset):
    pred, ref = _random_pair() if source == "random" else _phantom_pair(tiny_dataset)
    w = WINDOWS[window]
    ours = score_batch(pred, ref, [w], metrics=("psnr", "ssim", "ssim_uniform", "rmse"))
    theirs = _skimage(pred, ref, w)
    for metric, values in theirs.items():
        atol = 1e-4 * (w.width if metric == "rmse" else 1)
        np.testing.assert_allclose(ours[(window, metric)].numpy(), values, rtol=0, atol=atol,
                                   err_msg=f"{metric} in {window}")


def test_ssim_convention_is_not_raw_hu():
    """SSIM is not shift-invariant: scoring raw (negative) HU would give other numbers; we document which."""
    pred, ref = _random_pair()
    w = WINDOWS["abdomen"]
    ours = score_batch(pred, ref, [w], metrics=("ssim",))[("abdomen", "ssim")][0].item()
    p, r = (np.clip(t[0, 0].double().numpy(), w.lo, w.hi) for t in (pred, ref))
    raw = structural_similarity(r, p, data_range=w.width, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert abs(ours - raw) > 0.01


def test_identical_images():
    _, ref = _random_pair()
    s = score_batch(ref, ref.clone(), [WINDOWS["full"]], metrics=("rmse", "psnr", "ssim"))
    assert torch.all(s[("full", "rmse")] == 0)
    assert torch.all(s[("full", "psnr")] == math.inf)  # explicit +inf, as scikit-image
    assert torch.allclose(s[("full", "ssim")], torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["ms_ssim", "vif", "fsim", "gmsd", "haarpsi"])
def test_piq_metrics_equal_direct_piq_calls(name):
    import piq

    pred, ref = _random_pair(n=2, size=192)
    w = WINDOWS["abdomen"]
    pu, ru = ((t.double().clamp(w.lo, w.hi) - w.lo) / w.width for t in (pred, ref))
    direct = {
        "ms_ssim": lambda: piq.multi_scale_ssim(pu, ru, data_range=1.0, reduction="none"),
        "vif": lambda: piq.vif_p(pu, ru, data_range=1.0, reduction="none"),
        "fsim": lambda: piq.fsim(pu, ru, data_range=1.0, reduction="none", chromatic=False),
        "gmsd": lambda: piq.gmsd(pu, ru, data_range=1.0, reduction="none"),
        "haarpsi": lambda: piq.haarpsi(pu, ru, data_range=1.0, reduction="none"),
    }[name]()
    ours = score_batch(pred, ref, [w], metrics=(name,))[("abdomen", name)]
    torch.testing.assert_close(ours, direct.double(), rtol=2e-5, atol=1e-7)  # ours runs piq in float32


def test_learned_metrics_report_missing_weights():
    assert METRICS["lpips"].unavailable and "never downloaded" in METRICS["lpips"].unavailable
    with pytest.raises(ValueError, match="unavailable"):
        get_metric("dists")


def test_register_a_metric_in_a_few_lines():
    @register_metric("mae_test", higher_is_better=False, unit="HU", default=False)
    def mae(pair):
        return (pair.pu - pair.ru).abs().flatten(1).mean(1) * pair.window.width

    pred, ref = _random_pair()
    got = score_batch(pred, ref, [WINDOWS["full"]], metrics=("mae_test",))[("full", "mae_test")]
    expect = (pred.double().clamp(-1024, 3071) - ref.double().clamp(-1024, 3071)).abs().flatten(1).mean(1)
    torch.testing.assert_close(got, expect)
    del METRICS["mae_test"]


@pytest.mark.parametrize("pred,ref,match", [
    (torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 17), "differs from reference shape"),
    (torch.full((2, 1, 16, 16), float("nan")), torch.zeros(2, 1, 16, 16), "NaN or inf"),
    (torch.zeros(2, 1, 16, 16), torch.full((2, 1, 16, 16), float("inf")), "NaN or inf"),
    (torch.zeros(0, 1, 16, 16), torch.zeros(0, 1, 16, 16), "empty"),
])
def test_bad_input_gives_one_clear_error(pred, ref, match):
    with pytest.raises(ValueError, match=match):
        score_batch(pred, ref, [WINDOWS["full"]])


def test_window_with_lo_not_below_hi():
    with pytest.raises(ValueError, match="must be below"):
        Window("bad", 100, 100)
    with pytest.raises(ValueError, match="must be below"):
        Window.parse("240,-160")
    assert Window.parse("-160,240").width == 400


def test_bootstrap_ci_matches_scipy_on_patient_means():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(12), 5)
    values = rng.normal(30, 2, size=12)[patients] + rng.normal(0, 0.5, size=patients.size)
    lo, hi = bootstrap_ci(values, patients, n_boot=4000, seed=1)
    means = pd.Series(values).groupby(patients).mean().to_numpy()
    ref = sps.bootstrap((means,), np.mean, n_resamples=4000, method="percentile", random_state=2).confidence_interval
    assert lo == pytest.approx(ref.low, abs=0.15) and hi == pytest.approx(ref.high, abs=0.15)
    assert lo < values.mean() < hi


def test_paired_tests_are_scipys_and_summary_matches_pandas():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 40)
    b = a + 0.3 + rng.normal(0, 0.2, 40)
    assert paired_test(a, b) == pytest.approx(sps.ttest_rel(a, b).pvalue)  # the unit: per-patient means
    assert paired_test(a, b, unit="slice") == pytest.approx(sps.wilcoxon(a - b).pvalue)
    assert paired_test(a, a) == 1.0 and np.isnan(paired_test(a[:1], b[:1]))  # one pair: no test
    with pytest.raises(ValueError, match="paired"):
        paired_test(a, b[:-1])
    patients = np.repeat(["p1", "p2", "p3", "p4"], 10)
    df = pd.DataFrame({"method": ["x"] * 40 + ["y"] * 40, "anatomy": "head", "dose": 0.1, "window": "full",
                       "metric": "psnr", "patient": list(patients) * 2, "slice": list(range(40)) * 2,
                       "value": np.r_[a, b]})
    s = summarize(df)
    assert s.loc[s.method == "y", "mean"].item() == pytest.approx(b.mean())
    assert s.loc[s.method == "y", "std"].item() == pytest.approx(b.std(ddof=1))
    cmp = compare_to_best(df, {"psnr": True})
    assert cmp.loc[cmp.method == "y", "rank"].item() == 1 and set(cmp.n_patients) == {4}
    means = df.groupby(["method", "patient"])["value"].mean().unstack(0)
    assert cmp.loc[cmp.method == "x", "p_vs_best"].item() == pytest.approx(sps.ttest_rel(means.x, means.y).pvalue)
    by_slice = compare_to_best(df, {"psnr": True}, unit="slice")
    assert by_slice.loc[by_slice.method == "x", "p_vs_best"].item() == pytest.approx(sps.wilcoxon(a - b).pvalue)


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_fused_cpu_pass_equals_the_convolution_version(kind):
    """The numba pass (window + MSE + SSIM in one go) against windowing, then torch convolutions."""
    from ldct_bench.metrics.fidelity import WindowedPair, mse_unit, ssim

    pred, ref = _random_pair(n=3, size=40)
    w = WINDOWS["abdomen"]
    fused = WindowedPair(pred, ref, w)
    plain = WindowedPair(pred, ref, w)
    torch.testing.assert_close(fused.ssim(kind), ssim(plain.pu, plain.ru, kind), rtol=0, atol=1e-6)
    torch.testing.assert_close(fused.mse(), mse_unit(plain.pu, plain.ru), rtol=1e-6, atol=0)


def test_the_fused_pass_gives_the_same_bits_compiled_afresh_and_loaded_from_numbas_cache(tmp_path):
    """Same config, same numbers (DESIGN): a first run compiles the kernel, later runs load it from the cache."""
    import os
    import subprocess
    import sys

    code = ("import torch; from ldct_bench.metrics import WINDOWS, score_batch; "
            "g = torch.Generator().manual_seed(0); ref = torch.randn(4, 1, 64, 64, generator=g) * 300; "
            "pred = ref + torch.randn(ref.shape, generator=g) * 40; "
            "s = score_batch(pred, ref, [WINDOWS['abdomen']], ('ssim', 'rmse')); "
            "print(b''.join(v.numpy().tobytes() for v in s.values()).hex())")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    fresh, cached = (subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
                     .stdout for _ in range(2))
    assert len(fresh) > 100 and fresh == cached
