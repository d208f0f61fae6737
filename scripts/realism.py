"""How far the phantoms are from patients, measured: the same realism measures (ldct_bench/metrics/realism.py) on
the phantoms' noiseless truth and full-dose scans, of each anatomy model, and on real CT.

    python scripts/realism.py [--out results/realism] [--cranium PATH]

Real CT: the slices pydicom ships (CT_small.dcm, a 0.66 mm neck-thorax crop; 693_J2KI.dcm, a 0.48 mm head;
J2K_pixelrep_mismatch.dcm, a 0.43 mm skull base) and the head volume of Debian's invesalius-examples (Cranium.inv3,
0.96 mm; `bash scripts/fetch_cranium.sh` fetches it; without it the script says so and measures the slices alone).
They are a yardstick, never a tuning set: the anatomy's parameters come from the literature cited in
data/detail.py, and this script only reports where the phantoms land. Phantoms: 3 patients x 3 anatomies x 2
slices of each anatomy model through the default scanner (1.37 mm) and the 180 mm display field (0.70 mm); and
their heads alone through a head field that holds the whole head (data/acquisition.py's HEAD_FIELD, 280 mm at 512^2,
0.55 mm), the like-for-like comparison with real CT that is mostly heads: the 180 mm field cuts the phantoms' skulls,
and the clinical model reconstructs nothing outside its circle, so there the body is the circle.

Writes realism.json (every measure of every set), realism.md (the table, the real range and where each phantom set
lands), realism.png (spectra, HU histograms, gradient distributions and example slices), cranium_axes.png (the
volume's three axes: its first is axial) and manifest.json (command, commit, versions).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from ldct_bench.atomic import atomic_write_json, atomic_write_text
from ldct_bench.data.acquisition import HEAD_FIELD
from ldct_bench.data.dataset import LDCTDataset, PhantomConfig
from ldct_bench.data.resolve import phantoms_for
from ldct_bench.environment import git_commit, versions
from ldct_bench.metrics.realism import AIR_SHARE, AREA_SHARE, body_mask, cerebral_levels, measure, radial_power

SLICES = {"CT_small.dcm": "neck-thorax", "693_J2KI.dcm": "head", "J2K_pixelrep_mismatch.dcm": "skull base"}
MODELS = ("ellipses", "realistic", "clinical", "clinical2")
PHANTOMS = [(model, acq) for model in MODELS for acq in ("default", "dfov180")]
HEAD_FIELD_SIZE = 512
HEADS = f"@ head field {HEAD_FIELD.geometry.fov_mm:g} mm, heads"
CEREBRUM = "Cranium.inv3 cerebrum"
# the headline measures, read from measure()'s dict; beta in soft tissue needs several ROIs, so not per slice
HEADLINE = {"beta soft": lambda m: m["beta_soft"], "beta body": lambda m: m["beta_body"],
            "soft-tissue HU sd": lambda m: m["tissues"].get("soft", {}).get("std", float("nan")),
            "gradient p90 (HU/mm)": lambda m: m["gradient"]["p90"], "fine-scale sd (HU)": lambda m: m["fine_sd"]}
PER_SLICE = {k: get for k, get in HEADLINE.items() if k != "beta soft"}


def real_sets(cranium: Path | None) -> dict[str, tuple[list[np.ndarray], float]]:
    sets = {}
    for name, region in SLICES.items():
        ds = pydicom.dcmread(get_testdata_file(name))
        hu = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        sets[f"{name} ({region})"] = ([np.maximum(hu, -1024.0)], float(ds.PixelSpacing[0]))
    if cranium is not None:
        from ldct_bench.data.invesalius import read_inv3

        volume, spacing = read_inv3(cranium)
        sets["Cranium.inv3 (head volume)"] = (list(volume[20:100:5].astype(np.float64)), spacing[1])
        levels = cerebral_levels(volume)
        if levels:  # a volume without the phantom heads' levels gets no like-for-like table
            sets[f"{CEREBRUM} (slices {levels[0]}-{levels[-1]})"] = (list(volume[levels].astype(np.float64)),
                                                                      spacing[1])
    return sets


def phantom_sets(cache: Path) -> dict[str, tuple[list[np.ndarray], float]]:
    sets = {}
    for model, acq in PHANTOMS:
        config = phantoms_for(f"embedded@{acq}", replace(PhantomConfig.sized(256, 2, 3), anatomy_model=model))
        ds = LDCTDataset.embedded(config, doses=[0.25], splits=("train", "test"), cache_dir=cache, progress=False)
        pairs = ds.pairs(list(ds.anatomies), [0.25], ("train", "test"), truth=True)
        pixel = float(ds.pixel_mm)
        for kind, images in (("truth", pairs.truth), ("full dose", pairs.fd)):
            sets[f"{model} {kind} @ {acq}"] = ([t[0].numpy().astype(np.float64) for t in images], pixel)
    head_field = HEAD_FIELD.simulator(HEAD_FIELD_SIZE)
    for model in MODELS:  # the real CT is mostly heads at 0.4-1 mm: the like-for-like comparison
        config = replace(PhantomConfig.sized(HEAD_FIELD_SIZE, 2, 3), anatomy_model=model,
                         simulator=head_field.to_dict())
        ds = LDCTDataset.embedded(config, doses=[0.25], anatomies=["head"], splits=("train", "test"),
                                  cache_dir=cache, progress=False)
        pairs = ds.pairs(["head"], [0.25], ("train", "test"), truth=True)
        for kind, images in (("truth", pairs.truth), ("full dose", pairs.fd)):
            sets[f"{model} {kind} {HEADS}"] = ([t[0].numpy().astype(np.float64) for t in images], float(ds.pixel_mm))
    return sets


def table(results: dict) -> str:
    head = ("| set | pixel (mm) | slices | soft ROIs | beta soft | beta body | soft HU mean ± sd | fat HU mean ± sd | "
            "gradient p50 / p90 / p99 (HU/mm) | fine-scale sd (HU) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, m in results.items():
        t = m["tissues"]
        cls = {c: (f"{t[c]['mean']:.0f} ± {t[c]['std']:.0f}" if c in t else "–") for c in ("soft", "fat")}
        g = m["gradient"]
        rows.append(f"| {name} | {m['pixel_mm']:.2f} | {m['slices']} | {m['soft_rois']} | {_f(m['beta_soft'])} | "
                    f"{_f(m['beta_body'])} | {cls['soft']} | {cls['fat']} | {g['p50']:.0f} / {g['p90']:.0f} / "
                    f"{g['p99']:.0f} | {_f(m['fine_sd'])} |")
    return head + "\n".join(rows) + "\n"


def _f(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:.2f}"


def landing(results: dict, real: list[str]) -> str:
    """The real range of each headline measure and where each phantom set lands (inside, or how far outside)."""
    lines = ["| measure | real range | " + " | ".join(n for n in results if n not in real) + " |",
             "|---|---|" + "---|" * (len(results) - len(real))]
    for key, get in HEADLINE.items():
        values = [get(results[n]) for n in real if math.isfinite(get(results[n]))]
        lo, hi = min(values), max(values)
        cells = []
        for name in (n for n in results if n not in real):
            v = get(results[name])
            mark = "in" if lo <= v <= hi else ("below" if v < lo else "above")
            cells.append(f"{_f(v)} ({mark})")
        lines.append(f"| {key} | {lo:.2f} – {hi:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def level_matched(sets: dict) -> tuple[str, dict]:
    """The phantom heads through the head field against the real head's slices at the same levels (cerebral_levels),
    slice by slice: each measure's range over the real slices and over each phantom set's, and where the second lies.
    Its json: every slice's measures, per set."""
    names = [n for n in sets if n.startswith(CEREBRUM)] + [n for n in sets if n.endswith(HEADS)]
    if not names or not names[0].startswith(CEREBRUM):
        return "", {}
    slices = {n: [measure([im], sets[n][1]) for im in sets[n][0]] for n in names}
    spans = {n: {k: (min(map(get, ms)), max(map(get, ms))) for k, get in PER_SLICE.items()} for n, ms in slices.items()}
    real = spans[names[0]]
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in PER_SLICE:
        lo, hi = real[key]
        cells = [f"{lo:.2f} – {hi:.2f}"]
        for name in names[1:]:
            a, b = spans[name][key]
            mark = ("in" if lo <= a and b <= hi else "below" if b < lo else "above" if a > hi
                    else "overlaps, lower" if a < lo else "overlaps, higher")
            cells.append(f"{a:.2f} – {b:.2f} ({mark})")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    per_slice = {n: [{k: get(m) for k, get in PER_SLICE.items()} for m in ms] for n, ms in slices.items()}
    return "\n".join(lines) + "\n", per_slice


def figure(sets: dict, out: Path) -> None:
    fig, ax = plt.subplots(2, 3, figsize=(17, 10))
    for name, (images, pixel) in sets.items():
        if " full dose " in name or name.endswith("heads"):
            continue
        style = "-" if name.endswith(")") else ("--" if name.startswith("ellipses") else ":")
        masks = [body_mask(im) for im in images]
        bodies = [np.where(m, im, -1000.0) for im, m in zip(images, masks)]
        curves = [radial_power(b, pixel) for b in bodies]
        grid = np.geomspace(0.02, min(0.5 / pixel, 0.7), 40)
        power = np.mean([np.interp(grid, f, p / p[1:].sum()) for f, p in curves], axis=0)
        ax[0, 0].loglog(grid, power, style, label=name)
        values = np.concatenate([im[m] for im, m in zip(images, masks)])
        ax[0, 1].hist(np.clip(values, -1100, 1600), bins=270, range=(-1100, 1600), density=True, histtype="step",
                      linestyle=style, label=name)
        grads = np.concatenate([np.hypot(*np.gradient(im, pixel))[m] for im, m in zip(images, masks)])
        ax[0, 2].plot(np.sort(grads), np.linspace(0, 1, len(grads)), style, label=name)
    ax[0, 0].set(xlabel="cycles/mm", ylabel="normalised power", title="radial power spectrum of the body")
    ax[0, 0].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax[0, 1].set(xlabel="HU", ylabel="density", yscale="log", title="HU histogram inside the body")
    ax[0, 2].set(xscale="log", xlim=(1, 3000), xlabel="|gradient| (HU/mm)", ylabel="cumulative share",
                 title="edge sharpness")
    ax[0, 2].legend(fontsize=7, loc="lower right")
    picks = [n for n in sets if n.startswith("Cranium")][:1] + [f"{m} truth {HEADS}" for m in ("ellipses", "clinical2")]
    for a, name in zip(ax[1], picks):
        images, _ = sets[name]
        a.imshow(images[len(images) // 2] if name.startswith("Cranium") else images[0], cmap="gray", vmin=-100,
                 vmax=150)
        a.set_title(name)
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out / "realism.png", dpi=80)
    plt.close(fig)


def cranium_axes(cranium: Path, out: Path) -> None:
    from ldct_bench.data.invesalius import read_inv3

    volume, spacing = read_inv3(cranium)
    fig, ax = plt.subplots(1, 3, figsize=(15, 5))
    views = [(volume[54], 1.0, "first axis (axial): slice 54 of 108"),
             (volume[:, :, 128], spacing[0] / spacing[2], "third axis: a sagittal reformat"),
             (volume[:, 128, :], spacing[0] / spacing[2], "second axis: a coronal reformat")]
    for a, (img, aspect, title) in zip(ax, views):
        a.imshow(img, cmap="gray", vmin=-100, vmax=150, aspect=aspect)
        a.set_title(title)
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out / "cranium_axes.png", dpi=70)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/realism"))
    ap.add_argument("--cranium", type=Path, default=None,
                    help="Cranium.inv3 (default: where scripts/fetch_cranium.sh puts it, if there)")
    args = ap.parse_args()
    from ldct_bench.data.dataset import default_cache_dir

    cranium = args.cranium or default_cache_dir() / "real" / "Cranium.inv3"
    if not cranium.is_file():
        print(f"{cranium} is not there (bash scripts/fetch_cranium.sh fetches it); measuring the slices alone",
              file=sys.stderr)
        cranium = None
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    real = real_sets(cranium)
    with tempfile.TemporaryDirectory() as cache:
        sets = {**real, **phantom_sets(Path(cache))}
    results = {name: measure(images, pixel) for name, (images, pixel) in sets.items()}
    matched, per_slice = level_matched(sets)
    atomic_write_json(args.out / "realism.json", {**results, "per_slice": per_slice})
    text = ("# Realism: the phantoms beside real CT\n\nMade by `python scripts/realism.py` (ldct_bench/metrics/"
            "realism.py's measures). beta: the negated log-log slope of the radial power spectrum over "
            "0.05-0.25 cycles/mm, in 40 mm soft-tissue ROIs (-150..150 HU throughout) and over the body; HU classes "
            "soft -40..150, fat -200..-40; gradients inside the body, 3 mm in from the skin; fine-scale sd: soft "
            "tissue on a 1 mm grid less its 2 mm Gaussian blur (mostly the scan's noise; a noiseless head's is 3 HU)."
            "\n\n"
            + table(results) + "\n## Where the phantoms land against the real range\n\n" + landing(
                {n: m for n, m in results.items() if not n.startswith(CEREBRUM)},
                [n for n in real if not n.startswith(CEREBRUM)])
            + ("\n## Like for like: the phantom heads against the real head at the same levels, slice by slice\n\n"
               "The phantom heads model the cerebrum at and near its widest section: no skull base (sinuses, "
               "orbits, petrous bone, the muscles and fat of the face and neck), no vertex. The real head volume's "
               "slices at those levels (ldct_bench/metrics/realism.py's cerebral_levels: a section at least "
               f"{AREA_SHARE * 100:g} % of the widest, under {AIR_SHARE * 100:g} % of it air) are compared with each "
               "phantom head slice through the head field, each measure's range over single slices. The real slices "
               "hold their scanner's noise, so the full dose is the like-for-like phantom row; the truth shows the "
               "anatomy alone.\n\n" + matched
               if matched else ""))
    atomic_write_text(args.out / "realism.md", text)
    figure(sets, args.out)
    if cranium is not None:
        cranium_axes(cranium, args.out)
    atomic_write_json(args.out / "manifest.json", {
        "command": "python scripts/realism.py " + " ".join(sys.argv[1:]), "git_commit": git_commit(),
        "versions": versions(), "cranium": str(cranium) if cranium else None,
        "wall_time_s": round(time.perf_counter() - t0, 1)})
    print(text)


if __name__ == "__main__":
    main()
