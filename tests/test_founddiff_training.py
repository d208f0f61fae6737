"""FoundDiff trained with the quick profile on simulated data: DA-CLIP perceives dose and anatomy on held-out
patients, an unseen dose landing between its seen neighbours; DA-Diff starts at its input and a short training
keeps it there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from ldct_bench.checkpoints import REFERENCE_DIR, TrainJob
from ldct_bench.conventions import ANATOMIES
from ldct_bench.methods import get_method
from ldct_bench.toolkit import centre_slice
from ldct_bench.training import train_method

DOSES = (0.05, 0.1, 0.25, 0.5)  # the default protocol: 10 % and 50 % seen, 25 % between them, 5 % below


def test_daclip_of_the_reference_checkpoint_orders_doses(reference_sample):
    """The committed quick-profile FoundDiff (trained by scripts/train_reference.sh) on patients it never saw,
    simulated here afresh."""
    weights = sorted((REFERENCE_DIR / "founddiff").glob("*/weights.safetensors"))
    assert weights, "the reference FoundDiff checkpoint is missing"
    method = get_method("founddiff").load(weights[0])
    ds = reference_sample
    rows = []
    for dose in DOSES:
        pairs = ds.pairs(ANATOMIES, [dose], "test")
        seen = method.perceive(centre_slice(pairs.ld))
        rows.append(pd.DataFrame({"dose": dose, "score": seen["dose_score"].numpy(),
                                  "estimated": seen["estimated_dose"].numpy(),
                                  "anatomy": pairs.meta["anatomy"].to_numpy(),
                                  "guess": [ANATOMIES[i] for i in seen["estimated_anatomy"].numpy()]}))
    p = pd.concat(rows)
    rho = spearmanr(p.dose, p.score).statistic
    median = p.groupby("dose").estimated.median()
    accuracy = (p.anatomy == p.guess).mean()
    print(f"Spearman {rho:.3f}; median estimated dose {median.round(3).to_dict()}; anatomy accuracy {accuracy:.1%}")
    # data version 3 (nested noise), 300 DA-CLIP steps on the CPU: Spearman 0.63 over slices, the unseen 5 % read
    # as its seen neighbour 10 % (medians 0.097 and 0.100); with data version 2 it was above 0.9
    assert rho > 0.5
    assert median[0.05] <= median[0.1] < median[0.25] < median[0.5]  # the unseen 25 % between its seen neighbours
    assert accuracy > 0.95


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    """The quick profile on the tiny phantoms (128 x 128, 3 training patients per anatomy): a short DA-CLIP stage,
    then 4 DA-Diff steps validated at the end (12 s in all on one core)."""
    out = tmp_path_factory.mktemp("founddiff")
    job = TrainJob("founddiff", "quick", (0.1, 0.5), ANATOMIES, tiny_dataset.root.name,
                   overrides=dict(daclip_iterations=10, dadiff_iterations=4, val_every=4))
    man = train_method(job, tiny_dataset, out=out, progress=False)
    return man, out


def test_quick_dadiff_starts_at_its_input_and_a_short_training_keeps_it_there(trained):
    """The zero-initialised read-out makes DA-Diff its input at the start, and a short training must not wreck that
    (the whole two-stage harness runs: DA-CLIP, then DA-Diff validated against its input). On the tiny phantoms 4
    steps move it by -0.006 dB (10 steps: +0.003; 20: -0.008; at 256 x 256, 150 steps gave +0.0014 at 75 and -0.0016
    at 150); the committed checkpoint's validation curve shows the gain a full budget brings (43.39 dB input, 44.82
    at 800 steps, 46.99 at 4000)."""
    man, out = trained
    val = pd.read_csv(Path(out) / "train_log.csv").dropna(subset=["val_psnr"])
    print(val[["step", "val_psnr", "val_psnr_ldct"]].to_string(index=False))
    gain = val.val_psnr - val.val_psnr_ldct
    assert (gain.abs() < 0.05).all() and gain.min() > -0.02
    assert man["complete"] and np.isfinite(val.val_psnr).all()
