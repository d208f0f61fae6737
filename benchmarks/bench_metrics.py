"""Metric throughput on 512x512 slices: the vectorised engine vs a per-slice scikit-image + piq loop.

    python benchmarks/bench_metrics.py [--n 32] [--size 512]

Both score the same slices in the same window; the script prints slices/s, the speed ratio
and the largest difference between the two sets of numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import piq
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ldct_bench.metrics import WINDOWS, score_batch


def reference_fidelity(pred, ref, w):
    out = {"psnr": [], "ssim": [], "rmse": []}
    for p, r in zip(pred[:, 0].double().numpy(), ref[:, 0].double().numpy()):
        p, r = np.clip(p, w.lo, w.hi) - w.lo, np.clip(r, w.lo, w.hi) - w.lo
        out["psnr"].append(peak_signal_noise_ratio(r, p, data_range=w.width))
        out["ssim"].append(structural_similarity(r, p, data_range=w.width, gaussian_weights=True, sigma=1.5,
                                                 use_sample_covariance=False))
        out["rmse"].append(float(np.sqrt(np.mean((p - r) ** 2))))
    return out


PIQ = {"ms_ssim": lambda p, r: piq.multi_scale_ssim(p, r, data_range=1.0), "vif": lambda p, r: piq.vif_p(p, r, data_range=1.0),
       "fsim": lambda p, r: piq.fsim(p, r, data_range=1.0, chromatic=False), "gmsd": lambda p, r: piq.gmsd(p, r, data_range=1.0),
       "haarpsi": lambda p, r: piq.haarpsi(p, r, data_range=1.0)}


def reference_piq(pred, ref, w):
    pu, ru = ((t.double().clamp(w.lo, w.hi) - w.lo) / w.width for t in (pred, ref))
    return {k: [float(f(pu[i:i + 1], ru[i:i + 1])) for i in range(len(pu))] for k, f in PIQ.items()}


def timed(fn, *a):
    t = time.perf_counter()
    out = fn(*a)
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(args.n, 1, args.size, args.size, generator=g) * 300
    pred = ref + torch.randn(ref.shape, generator=g) * 40
    w = WINDOWS["abdomen"]
    score_batch(pred[:2], ref[:2], [w])  # warm-up
    print(f"{args.n} slices of {args.size}x{args.size}, window {w.name}, torch threads {torch.get_num_threads()}")
    print(f"{'metric set':<22} {'ours slices/s':>14} {'reference slices/s':>19} {'ratio':>7} {'max |diff|':>11}")
    t_ours, ours = timed(score_batch, pred, ref, [w], ("rmse", "psnr", "ssim"))
    t_ref, theirs = timed(reference_fidelity, pred, ref, w)
    diff = max(float(np.max(np.abs(ours[(w.name, k)].numpy() - np.array(v)))) for k, v in theirs.items())
    print(f"{'PSNR/SSIM/RMSE':<22} {args.n / t_ours:>14.1f} {args.n / t_ref:>19.1f} {t_ref / t_ours:>6.1f}x {diff:>11.2e}")
    names = tuple(PIQ)
    t_ours2, ours2 = timed(score_batch, pred, ref, [w], ("rmse", "psnr", "ssim", *names))
    t_ref2, theirs2 = timed(reference_piq, pred, ref, w)
    diff2 = max(float(np.max(np.abs(ours2[(w.name, k)].numpy() - np.array(v)))) for k, v in theirs2.items())
    print(f"{'full set (+piq)':<22} {args.n / t_ours2:>14.1f} {args.n / (t_ref + t_ref2):>19.1f} "
          f"{(t_ref + t_ref2) / t_ours2:>6.1f}x {max(diff, diff2):>11.2e}")


if __name__ == "__main__":
    main()
