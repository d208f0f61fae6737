"""Do the committed checkpoints improve real CT? The measurement behind the realistic-anatomy issue's targets.

    python scripts/real_transfer.py [--out results/transfer] [--train-data SPEC] [--phantoms clinical]
                                    [--methods ldct,redcnn,...] [--cranium PATH] [--cranium-slices 16]

Real CT: the three slices pydicom ships (CT_small.dcm 0.66 mm, 693_J2KI.dcm 0.48 mm, J2K_pixelrep_mismatch.dcm
0.43 mm) and, where `bash scripts/fetch_cranium.sh` installed it, `--cranium-slices` adjacent slices at the middle of
the Debian head volume Cranium.inv3 (0.96 mm), written as a DICOM series. Each is imported with 5, 10, 25 and 50 %
inserted (`ldct-bench data import --doses 50,25,10,5`) and scored by every committed learned checkpoint beside the
input (`ldct-bench run --train-data SPEC`: the training data of the committed checkpoints, so that they are the
ones found). The slices are a test, never a tuning set: nothing is chosen on them.

Writes real.csv (PSNR and SSIM per slice, method and dose, founddiff window, against the real full dose), regions.csv
(the squared error inside the patient and outside it: air, couch, head holder), real.md (gain over the input per
source, dose and method; the worst gain of each method; where the 50 % gain is lost, inside the patient or outside;
the mean gain at 5 % against the embedded test set's, from results/runs/reference) and manifest.json (every command,
commit, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.data import get_testdata_file

from ldct_bench.atomic import atomic_write_json, atomic_write_text
from ldct_bench.conventions import ANATOMY_MODELS, DEFAULT_ANATOMY_MODEL
from ldct_bench.data.dataset import LDCTDataset, default_cache_dir
from ldct_bench.data.invesalius import read_inv3, write_dicom
from ldct_bench.environment import git_commit, versions
from ldct_bench.metrics import WINDOWS
from ldct_bench.metrics.realism import body_mask
from ldct_bench.results import RunStore

SLICES = {"CT_small.dcm": "abdomen", "693_J2KI.dcm": "head", "J2K_pixelrep_mismatch.dcm": "head"}
DOSES = "50,25,10,5"


def ldct(*args, log: list) -> None:
    command = ["ldct-bench", *map(str, args)]
    log.append(" ".join(command))
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def sources(work: Path, cranium: Path | None, n_slices: int) -> dict[str, tuple[Path, str]]:
    """Name -> (a folder holding its DICOM, its anatomy)."""
    out = {}
    for name, anatomy in SLICES.items():
        folder = work / "dicom" / Path(name).stem
        folder.mkdir(parents=True)
        shutil.copy(get_testdata_file(name), folder / name)
        out[name] = (folder, anatomy)
    if cranium is not None and cranium.is_file():
        volume, spacing = read_inv3(cranium)
        start = max(0, (len(volume) - n_slices) // 2)  # adjacent slices (CoreDiff and FoundDiff read neighbours)
        write_dicom(volume[start:start + n_slices], spacing, work / "dicom" / "cranium")
        out["Cranium.inv3"] = (work / "dicom" / "cranium", "head")
    return out


def by_region(run: Path, dataset: LDCTDataset, anatomy: str, methods: list[str]) -> pd.DataFrame:
    """Mean squared error (founddiff window, against the real full dose) inside the patient (realism.body_mask of the
    full dose) and outside it (air, couch, head holder, cushions: hardware the phantoms do not have), per method and
    dose, from the slices `run --save-images` kept: where a method's gain is lost."""
    window, store, rows = WINDOWS["founddiff"], RunStore(run), []
    # each patient's full-dose volume read once and each slice's body mask made once, for every method and dose
    volumes: dict[str, np.ndarray] = {}
    masks: dict[tuple[str, int], np.ndarray] = {}
    for dose in map(float, DOSES.split(",")):
        for method in methods:
            saved = store.images(method, anatomy, dose / 100)
            keys = [(str(p), int(i)) for p, i in zip(saved["patient"], saved["slice"])]
            for p, _ in keys:
                if p not in volumes:
                    volumes[p] = dataset.volume(anatomy, p, "full")
            full = np.stack([volumes[p][i] for p, i in keys])
            error = (np.clip(saved["images"], window.lo, window.hi) - np.clip(full, window.lo, window.hi)) ** 2
            for k, f in zip(keys, full):
                if k not in masks:
                    masks[k] = body_mask(f)
            inside = np.stack([masks[k] for k in keys])
            rows += [{"method": method, "dose": dose / 100, "region": region, "mse": float(error[mask].mean()),
                      "pixels": float(mask.mean())} for region, mask in (("patient", inside), ("outside", ~inside))]
    return pd.DataFrame(rows)


def embedded_gain_at_5(reference: Path) -> dict[str, float]:
    """Mean PSNR gain over the input at 5 % (founddiff window, full dose) of each method on the reference run."""
    t = pd.read_parquet(reference / "results.parquet")
    t = t[(t.window == "founddiff") & (t.reference == "full_dose") & (t.metric == "psnr") & (t.dose == 0.05)]
    means = t.groupby("method")["value"].mean()
    return {m: float(v - means["ldct"]) for m, v in means.items() if m != "ldct"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/transfer"))
    ap.add_argument("--methods", default="ldct,redcnn,corediff,wgan-mse,founddiff,dncnn,bilateral,restormer")
    ap.add_argument("--train-data", default="embedded")
    ap.add_argument("--phantoms", default=DEFAULT_ANATOMY_MODEL, choices=ANATOMY_MODELS)
    ap.add_argument("--cranium", type=Path, default=Path(os.environ.get("LDCT_BENCH_CACHE", default_cache_dir()))
                    / "real" / "Cranium.inv3")
    ap.add_argument("--cranium-slices", type=int, default=16)
    ap.add_argument("--reference", type=Path, default=Path("results/runs/reference"),
                    help="the embedded run whose gain at 5 %% the real gain is set against")
    args = ap.parse_args()
    embedded = embedded_gain_at_5(args.reference)  # read first: a missing run stops the script before its long part
    work = Path(tempfile.mkdtemp(prefix="ldct-real-"))
    commands: list[str] = []
    frames, regions = [], []
    try:
        for name, (folder, anatomy) in sources(work, args.cranium, args.cranium_slices).items():
            dataset = f"real-{folder.name}"
            ldct("data", "import", "--source", "dicom", "--root", folder, "--name", dataset, "--anatomy", anatomy,
                 "--doses", DOSES, "--cache-dir", work / "cache", log=commands)
            out = work / "runs" / folder.name
            ldct("run", "--methods", args.methods, "--data", dataset, "--train-data", args.train_data, "--phantoms",
                 args.phantoms, "--out", out, "--cache-dir", work / "cache", "--save-images", log=commands)
            regions.append(by_region(out, LDCTDataset(work / "cache" / dataset), anatomy, args.methods.split(","))
                           .assign(source=name))
            t = pd.read_parquet(out / "results.parquet")
            t = t[(t.window == "founddiff") & (t.reference == "full_dose") & t.metric.isin(["psnr", "ssim"])]
            pixel = json.loads((out / "manifest.json").read_text())["dataset"]["pixel_mm"]
            frames.append(t.assign(source=name, pixel_mm=next(iter(pixel.values())) if isinstance(pixel, dict)
                                   else pixel))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = pd.concat(frames, ignore_index=True)[["source", "pixel_mm", "anatomy", "patient", "slice", "method",
                                                  "dose", "metric", "value"]]
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "real.csv", table.to_csv(index=False))
    region = pd.concat(regions, ignore_index=True)
    atomic_write_text(args.out / "regions.csv", region.to_csv(index=False))
    means = table.groupby(["source", "pixel_mm", "dose", "metric", "method"])["value"].mean().unstack("method")
    gain = means.drop(columns="ldct").sub(means["ldct"], axis=0)
    lines = ["| source | pixel (mm) | dose | method | PSNR gain (dB) | SSIM gain |", "|---|---|---|---|---|---|"]
    for (src, px, dose), g in gain.groupby(level=["source", "pixel_mm", "dose"]):
        for m in gain.columns:
            lines.append(f"| {src} | {px:.2f} | {dose:.0%} | {m} | {g.xs('psnr', level='metric')[m].iloc[0]:+.2f} | "
                         f"{g.xs('ssim', level='metric')[m].iloc[0]:+.4f} |")
    worst = gain.groupby(level="metric").min()
    lines += ["", "Worst gain over every source and dose (at or above 0: the target holds):", "",
              "| method | worst PSNR gain (dB) | worst SSIM gain |", "|---|---|---|"]
    lines += [f"| {m} | {worst.loc['psnr', m]:+.2f} | {worst.loc['ssim', m]:+.4f} |" for m in gain.columns]
    mse = region[region.dose == 0.5].set_index(["source", "region", "method"])["mse"].unstack("method")
    region_gain = 10 * np.log10(mse.drop(columns="ldct").rdiv(mse["ldct"], axis=0))
    lines += ["", "Where the 50 % gain is lost: PSNR gain (dB) inside the patient and outside it (air, couch, head holder;",
              "the share of pixels in brackets), from the same slices:", "",
              "| source | region | " + " | ".join(region_gain.columns) + " |",
              "|---|---|" + "---|" * len(region_gain.columns)]
    share = region[(region.dose == 0.5) & (region.method == "ldct")].set_index(["source", "region"])["pixels"]
    lines += [f"| {src} | {where} ({share[src, where]:.0%}) | " + " | ".join(f"{v:+.2f}" for v in row) + " |"
              for (src, where), row in region_gain.iterrows()]
    real5 = gain.xs(("psnr", 0.05), level=("metric", "dose")).mean()
    lines += ["", "Mean PSNR gain at 5 % on the real sources against the embedded test set (reference run):", "",
              "| method | real (dB) | embedded (dB) | ratio |", "|---|---|---|---|"]
    lines += [f"| {m} | {real5[m]:+.2f} | {embedded.get(m, float('nan')):+.2f} | "
              f"{real5[m] / embedded[m] if embedded.get(m) else float('nan'):.2f} |" for m in gain.columns]
    atomic_write_text(args.out / "real.md", "\n".join(lines) + "\n")
    atomic_write_json(args.out / "real_manifest.json", {
        "command": "python scripts/real_transfer.py " + " ".join(sys.argv[1:]), "steps": commands,
        "git_commit": git_commit(), "versions": versions()})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
