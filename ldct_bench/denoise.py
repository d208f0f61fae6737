"""`ldct-bench denoise`: a trained method applied to one's own DICOM series, written back as DICOM.

The input folder is read as `data import` reads it (CT slices to HU, grouped by series, ordered by table
position). Each series is denoised in batches (a contextual method gets its neighbouring slices; FoundDiff reads
dose and anatomy from the images through DA-CLIP) and written with the source's geometry and patient headers, new
series and SOP instance UIDs, ImageType DERIVED/SECONDARY, a SeriesDescription naming the method and a
DerivationDescription naming the checkpoint. A series is written into a hidden folder and renamed when complete, so
an interrupted run leaves no half series and a re-run skips the finished ones.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoints import committed_checkpoints
from .data.dataset import neighbour_index
from .data.dicom_export import write_series
from .data.dicom_import import SliceRecord, read_hu, scan_folder
from .evaluate import denoise_stack
from .methods import Method, get_method
from .results import safe


def checkpoint_for(name: str, given: Path | None) -> Path | None:
    """`given`, or the one committed reference checkpoint of a learned method (None for a method that learns nothing)."""
    cls = get_method(name)
    if not cls.learned:
        return None
    if given is not None:
        if not Path(given).is_file():
            raise FileNotFoundError(f"--checkpoint {given}: no such file.")
        return Path(given)
    found = committed_checkpoints(name)
    if len(found) != 1:
        raise ValueError(f"method {name!r} has {'no' if not found else len(found)} committed checkpoints; give one with "
                         "--checkpoint PATH (e.g. a weights.safetensors from `ldct-bench train`).")
    return found[0]


def denoise_folder(name: str, src: Path, out: Path, checkpoint: Path | None = None, device: str = "cpu",
                   batch_size: int = 8, seed: int = 0, progress: bool = True, echo=print) -> dict[str, int]:
    """Denoise every CT series under `src` into `out/<patient>_<series>/`; returns how many series were written,
    skipped as done, and skipped slices by reason."""
    path = checkpoint_for(name, checkpoint)
    cls = get_method(name)
    method = (cls.load(path, device) if path else cls(None, device)).for_inference()
    report = scan_folder(src, "dicom")
    frames = [r for r in report.slices if r.frame is not None]
    if frames:
        raise ValueError(f"{frames[0].path} is an enhanced multi-frame CT; `denoise` writes single-frame series only "
                         "(import it with `ldct-bench data import` to score methods on it).")
    series: dict[tuple[str, str], list[SliceRecord]] = defaultdict(list)
    for r in report.slices:
        series[(r.patient, r.series)].append(r)
    out = Path(out)
    done = skipped = 0
    what = f"ldct-bench {name} denoised" + (f" ({path.parent.name})" if path else "")
    for (patient, uid), records in tqdm(sorted(series.items()), desc=f"{name}: denoising", unit="series",
                                        disable=not progress):
        folder = out / safe(f"{patient}_{uid}")
        if folder.is_dir():
            skipped += 1
            continue
        records = sorted(records, key=lambda r: r.z)
        images = denoise_series(method, np.stack([read_hu(r.path, r.frame, r.rescale) for r in records]),
                                f"series {uid} of patient {patient}", batch_size, seed, device)
        tmp = out / f".{folder.name}.writing-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            write_series(images, [r.path for r in records], tmp, what,
                         derivation=f"{what}; checkpoint {path if path else 'none (no weights)'}")
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        done += 1
    echo(f"{done} series written to {out}, {skipped} already there" + (f"; {report.summary()}" if report.skipped else ""))
    return {"written": done, "already_there": skipped, **{k: len(v) for k, v in report.skipped.items()}}


def denoise_series(method: Method, volume: np.ndarray, where: str, batch_size: int, seed: int,
                   device: str) -> np.ndarray:
    """(S, H, W) HU -> (S, H, W) HU, each slice with its neighbours when the method reads context (edges repeated,
    as the dataset loader does)."""
    stack = torch.from_numpy(np.ascontiguousarray(volume[neighbour_index(len(volume), method.context)],
                                                  dtype=np.float32))
    return denoise_stack(method, stack, where, batch_size, seed, device)[:, 0].numpy()
