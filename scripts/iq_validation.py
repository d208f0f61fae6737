"""The task-based metrics against their analytic answers, as the README's validation figure and numbers.

    python scripts/iq_validation.py [--out results/iq_validation] [--cache-dir DIR]

(a) CHO d' of disks in white noise against the analytic channelized d' (d'^2 = dv^T K^-1 dv);
(b) NPS: white noise (flat at sigma^2 dx dy) and the FBP (ramp x Hann) noise of the image-quality phantom at each
    dose, multiplied by the dose (noise variance ~ 1/dose puts every dose on one curve);
(c) TTF of Gaussian-blurred circular edges against exp(-2 pi^2 sigma^2 f^2).
The tests (tests/test_task_quality.py) assert the same checks; this draws them.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy.special import erfc

from ldct_bench.atomic import atomic_write_json
from ldct_bench.data.iq_phantom import NPS_ROI_MM, IQConfig, IQPhantomSet, to_pixel
from ldct_bench.environment import git_commit, versions
from ldct_bench.metrics.task import channel_width, channelize, cho, crop, lg_channels, nps_2d, radial_nps, ttf_circular_edge
from ldct_bench.report.figures import save

DOSES = (0.05, 0.1, 0.25, 0.5)


def observer(ax, numbers: dict) -> None:
    rng = np.random.default_rng(0)
    size, sigma, radius = 17, 10.0, 3.66
    yy, xx = np.indices((size, size)) - size // 2
    shape = (np.hypot(yy, xx) <= radius).astype(float)
    channels = lg_channels(size, channel_width(radius))
    a = channels.reshape(len(channels), -1) @ (np.eye(size * size) - 1 / size**2)
    rows = []
    for contrast in (1.0, 2.0, 3.0, 5.0, 7.0):
        dv = a @ (contrast * shape).ravel()
        analytic = math.sqrt(dv @ np.linalg.solve(sigma**2 * a @ a.T, dv))
        present = rng.normal(0, sigma, (2000, size, size)) + contrast * shape
        absent = rng.normal(0, sigma, (2000, size, size))
        det = cho(channelize(present, channels), channelize(absent, channels))
        rows.append({"contrast_hu": contrast, "analytic": analytic, "measured": det.dprime, "ci": det.dprime_ci})
    x, y = [r["analytic"] for r in rows], np.array([r["measured"] for r in rows])
    ax.errorbar(x, y, yerr=np.abs(np.array([r["ci"] for r in rows]).T - y), fmt="o", capsize=3,
                label="CHO, 2000 + 2000 realisations")
    ax.plot([0, max(x) * 1.1], [0, max(x) * 1.1], "k--", lw=1, label="analytic")
    ax.set(xlabel="analytic channelized d′", ylabel="measured d′", title="(a) CHO in white noise (7.3 mm disk)")
    ax.legend(frameon=False, fontsize=8)
    numbers["cho"] = rows


def noise(ax, numbers: dict, cache_dir: Path | None) -> None:
    rng = np.random.default_rng(1)
    px = IQConfig().geometry.pixel_mm
    white = radial_nps(nps_2d(rng.normal(0, 20.0, (400, 29, 29)), px), px)
    ax.plot(white.frequency, white.radial, "k:", label="white noise, σ = 20 HU")
    ax.axhline(20.0**2 * px**2, color="0.6", lw=0.8)
    iq = IQPhantomSet.build(IQConfig(), DOSES, cache_dir=cache_dir)
    g, rows = iq.geometry, []
    half = round(NPS_ROI_MM / g.pixel_mm / 2)
    for dose in (*DOSES, 1.0):
        nps = radial_nps(nps_2d(crop(iq.images("absent", dose), *to_pixel(g, 0, 0), half), g.pixel_mm), g.pixel_mm)
        ax.plot(nps.frequency, nps.radial * dose, label=f"FBP at {dose:.0%} (× dose)")
        rows.append({"dose": dose, "noise_hu": nps.noise, "noise_x_sqrt_dose": nps.noise * math.sqrt(dose),
                     "f_peak": nps.f_peak, "f_mean": nps.f_mean})
    ax.set(xlabel="frequency (cycles/mm)", ylabel="NPS × dose (HU² mm²)", title="(b) NPS: white and FBP noise")
    ax.legend(frameon=False, fontsize=7)
    numbers["nps"] = {"white_variance": white.noise**2, "white_expected": 400.0, "fbp": rows}


def resolution(ax, numbers: dict) -> None:
    px, rows = 0.68, []
    f = np.linspace(0, 1.2, 25)
    for sigma_mm in (0.5, 1.0, 2.0):
        radius, centre = 12.5 / px, (60.3, 59.8)
        r = np.hypot(*(np.indices((121, 121)) - np.array(centre)[:, None, None]))
        ttf = ttf_circular_edge(100 * 0.5 * erfc((r - radius) / (sigma_mm / px * math.sqrt(2))), *centre, radius, px)
        line = ax.plot(ttf.frequency, ttf.ttf, label=f"σ = {sigma_mm} mm, measured")[0]
        ax.plot(f, np.exp(-2 * math.pi**2 * sigma_mm**2 * f**2), "o", mfc="none", color=line.get_color())
        rows.append({"sigma_mm": sigma_mm, "ttf50": ttf.ttf50,
                     "ttf50_analytic": math.sqrt(math.log(2) / (2 * math.pi**2 * sigma_mm**2))})
    ax.axhline(0.5, color="0.7", lw=0.8)
    ax.set(xlabel="frequency (cycles/mm)", ylabel="TTF", title="(c) circular edge, Gaussian blur (circles: analytic)",
           xlim=(0, 1.2))
    ax.legend(frameon=False, fontsize=8)
    numbers["ttf"] = rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/iq_validation"))
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    numbers: dict = {}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    observer(axes[0], numbers)
    noise(axes[1], numbers, args.cache_dir)
    resolution(axes[2], numbers)
    fig.tight_layout()
    save(fig, args.out / "iq_validation")
    atomic_write_json(args.out / "iq_validation.json", {
        "command": "python scripts/iq_validation.py " + " ".join(sys.argv[1:]), "git_commit": git_commit(),
        "versions": versions(), **numbers})
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
