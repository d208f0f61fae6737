"""Where does a recipe gain or lose? PSNR gain over the input per acquisition profile, anatomy and dose, on the
validation split: the measurement training recipes are decided by (never the test split, never real CT).

    python scripts/validation_gains.py --method wgan-mse [WEIGHTS ...] [--acquisitions default,ge,...]
                                       [--slices 4] [--alone]

WEIGHTS: checkpoint files to compare (default: the committed one of --method). Each validation patient gives its
first --slices slices, through each acquisition profile the reference checkpoints train on; the gain is the PSNR in
the FoundDiff window against the full dose, minus the input's. --alone repeats each slice as its own neighbours, as
a single real slice gives a method that reads adjacent slices (CoreDiff). Prints one row per cell, then each
anatomy x dose averaged over the profiles, the mean over every cell and the worst cell.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ldct_bench.checkpoints import committed_checkpoints
from ldct_bench.data.dataset import PhantomConfig
from ldct_bench.data.resolve import open_dataset
from ldct_bench.methods import get_method
from ldct_bench.metrics.fidelity import mse_unit, psnr, to_unit
from ldct_bench.metrics.windows import WINDOWS

ACQUISITIONS = "default,ge,smooth,sharp,dfov180,dfov140"
ANATOMIES = ("head", "chest", "abdomen")
DOSES = (0.05, 0.1, 0.25, 0.5)


def mean_psnr(pred: torch.Tensor, ref: torch.Tensor) -> float:
    w = WINDOWS["founddiff"]
    return psnr(mse_unit(to_unit(pred.double(), w), to_unit(ref.double(), w))).mean().item()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("weights", nargs="*", type=Path)
    ap.add_argument("--acquisitions", default=ACQUISITIONS)
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--alone", action="store_true")
    args = ap.parse_args(argv)
    cls = get_method(args.method)
    paths = args.weights or committed_checkpoints(args.method)
    if not paths:
        ap.error(f"no committed checkpoint of {args.method}; give the weights files to compare.")
    methods = [cls.load(p).for_inference() for p in paths]
    context = methods[0].context
    print("checkpoints:", ", ".join(str(p) for p in paths), "| alone" if args.alone else "")
    rows = []
    for acq in args.acquisitions.split(","):
        ds = open_dataset(f"embedded@{acq}", DOSES, ANATOMIES, ("val",),
                          phantoms=PhantomConfig(anatomy_model="clinical"), progress=False)
        for anatomy in ANATOMIES:
            for dose in DOSES:
                pairs = ds.pairs([anatomy], [dose], "val", context=context, max_slices=args.slices)
                centre = pairs.ld[:, context:context + 1]
                ld = centre.repeat(1, 1 + 2 * context, 1, 1) if args.alone else pairs.ld
                base = mean_psnr(centre, pairs.fd)
                with torch.inference_mode():
                    gains = [mean_psnr(m.denoise(ld), pairs.fd) - base for m in methods]
                rows.append((acq, anatomy, dose, gains))
                print(f"{acq:8s} {anatomy:8s} {dose:4.0%}: input {base:6.2f}  "
                      + "  ".join(f"{g:+.2f}" for g in gains), flush=True)
    gains = np.array([r[3] for r in rows])
    for anatomy in ANATOMIES:
        for dose in DOSES:
            cell = np.array([r[1] == anatomy and r[2] == dose for r in rows])
            print(f"{anatomy:8s} {dose:4.0%} over the profiles: " + "  ".join(f"{g:+.2f}" for g in gains[cell].mean(0)))
    print("mean over every cell: " + "  ".join(f"{g:+.3f}" for g in gains.mean(0)))
    print("worst cell: " + "  ".join(f"{g:+.2f}" for g in gains.min(0)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
