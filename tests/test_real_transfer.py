"""#30's target on real CT: every committed learned checkpoint, scored on the real slices pydicom ships and on three
slices of the real head volume (where `bash scripts/fetch_cranium.sh` installed it) with 5, 10, 25 and 50 % inserted,
at or above its input in PSNR and SSIM against the real full dose. These slices are a test, never a tuning set.

The cells where a checkpoint is measured below its input are listed in SHORTFALLS, and the test holds that they still
fall short: the list is the target's open part, stated, and a checkpoint that stops falling short there fails the
test until the list is shortened."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file

from ldct_bench.cli import main
from ldct_bench.data.invesalius import read_inv3, write_dicom

from .helpers import CRANIUM, committed_methods

SOURCES = {"CT_small.dcm": "abdomen", "693_J2KI.dcm": "head", "J2K_pixelrep_mismatch.dcm": "head",
           "Cranium.inv3": "head"}
LEARNED = list(committed_methods())
# (source, method, dose, metric) -> the gain measured there (below 0: the target does not hold in that cell yet), all
# with the committed checkpoints. Every shortfall is at 50 %, where the quiet real scans get the least noise (there a
# noiseless image scores no better than the input against the noisy real full dose); CT_small.dcm has none, and every
# SSIM gain is positive. The pydicom slices run under --runslow. The bilateral filter with range widths in noise SDs
# recovered everywhere (Cranium 50 %: -3.53 -> +1.67 dB), WGAN-MSE at adversarial weight 1e-5 nearly (50 %: -4.25 ->
# -0.55 dB on 693_J2KI, -3.17 -> -0.57 on Cranium); with its generator's running average and a 6000-step cap,
# -0.53 and -0.18 (J2K_pixelrep_mismatch -0.24 -> +0.01); every recipe was decided on the validation split
# (docs/methods), never here. CoreDiff trained with a quarter of its slices alone gains 0.37-0.44 dB more at 5 % on
# every single slice and falls below its input at 50 % on 693_J2KI (+0.19 -> -0.15), as its validation split's 50 %
# cells foretold (0.1 dB less).
SHORTFALLS: dict[tuple[str, str, float, str], float] = {
    ("693_J2KI.dcm", "corediff", 0.5, "psnr"): -0.15,
    ("693_J2KI.dcm", "dncnn", 0.5, "psnr"): -0.13,
    ("693_J2KI.dcm", "wgan-mse", 0.5, "psnr"): -0.53,
    ("Cranium.inv3", "wgan-mse", 0.5, "psnr"): -0.18,
}


def scored(source: str, tmp_path) -> pd.DataFrame:
    """The mean PSNR and SSIM (founddiff window, real full dose) of the input and every committed checkpoint on
    `source` with 50/25/10/5 % inserted, by `data import` and `run --train-data embedded`."""
    folder = tmp_path / "dicom"
    if source == "Cranium.inv3":
        volume, spacing = read_inv3(CRANIUM)
        middle = len(volume) // 2  # three adjacent slices: CoreDiff and FoundDiff read their neighbours
        write_dicom(volume[middle - 1:middle + 2], spacing, folder)
    else:
        folder.mkdir()
        shutil.copy(get_testdata_file(source), folder / source)
    cache, out = tmp_path / "cache", tmp_path / "run"
    for args in (["data", "import", "--source", "dicom", "--root", folder, "--name", "real", "--anatomy",
                  SOURCES[source], "--doses", "50,25,10,5", "--cache-dir", cache],
                 ["run", "--methods", ",".join(["ldct", *LEARNED]), "--data", "real", "--train-data", "embedded",
                  "--out", out, "--cache-dir", cache]):
        said = CliRunner().invoke(main, list(map(str, args)))
        assert said.exit_code == 0, said.output
    t = pd.read_parquet(out / "results.parquet")
    t = t[(t.window == "founddiff") & (t.reference == "full_dose") & t.metric.isin(["psnr", "ssim"])]
    return t.groupby(["dose", "metric", "method"])["value"].mean().unstack("method")


# the head volume in the default suite (the test); pydicom's slices, up to 512^2, behind --runslow
@pytest.mark.parametrize("source", [pytest.param(s, marks=() if s == "Cranium.inv3" else pytest.mark.slow)
                                    for s in SOURCES])
def test_every_committed_checkpoint_is_at_or_above_its_input_on_real_ct(source, tmp_path):
    if source == "Cranium.inv3" and not CRANIUM.is_file():
        pytest.skip("Cranium.inv3 not fetched (bash scripts/fetch_cranium.sh)")
    means = scored(source, tmp_path)
    assert sorted(means.index.get_level_values("dose").unique()) == pytest.approx([0.05, 0.1, 0.25, 0.5])
    gains = means[LEARNED].sub(means["ldct"], axis=0)
    print(gains.round(4).to_string())  # the measurement SHORTFALLS is written from
    short, recovered = [], []
    for (dose, metric), row in gains.iterrows():
        for method, gain in row.items():
            known = (source, method, round(dose, 2), metric) in SHORTFALLS
            if gain < 0 and not known:
                short.append(f"{method} {dose:.0%} {metric} {gain:+.4f}")
            if gain >= 0 and known:
                recovered.append(f"{method} {dose:.0%} {metric} {gain:+.4f}")
    assert not short, f"{source}: below the input in {short}"
    assert not recovered, f"{source}: no longer short in {recovered}; remove them from SHORTFALLS"
