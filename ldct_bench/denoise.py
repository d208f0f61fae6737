"""`ldct-bench denoise`: a trained method applied to one's own DICOM series, written back as DICOM.

The input folder is read as `data import` reads it (CT slices to HU, grouped by series, ordered by table
position). Each series is denoised in batches (a contextual method gets its neighbouring slices; FoundDiff reads
dose and anatomy from the images through DA-CLIP) and written with the source's geometry and patient headers, new
series and SOP instance UIDs, ImageType DERIVED/SECONDARY, a SeriesDescription naming the method and a
DerivationDescription naming the checkpoint. A series is written into a hidden folder and renamed when complete, so
an interrupted run leaves no half series and a re-run skips the finished ones: a series is done when the record
written last into its folder (COMPLETE) says so, not because a folder of its name exists.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_write_json
from .checkpoints import committed_checkpoints, outside_domain, training_domain
from .conventions import safe
from .data.dataset import neighbour_index, sha256_file
from .data.dicom_export import write_series
from .data.dicom_import import SliceRecord, acquisition_headers, read_volume, scan_folder
from .evaluate import denoise_resampled
from .methods import Method, get_method, training_record


def checkpoint_for(name: str, given: Path | None) -> Path | None:
    """`given`, or the one committed reference checkpoint of a learned method (None for a method that learns nothing,
    which refuses a checkpoint rather than ignore it)."""
    cls = get_method(name)
    if not cls.learned:
        if given is not None:
            raise ValueError(f"--checkpoint {given}: method {name!r} learns nothing and takes no weights; leave out "
                             "--checkpoint, or name a learned method.")
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


COMPLETE = ".ldct-bench-series.json"  # written last into a finished series folder: what made it, and how many slices


def denoise_folder(name: str, src: Path, out: Path, checkpoint: Path | None = None, device: str = "cpu",
                   batch_size: int = 8, seed: int = 0, progress: bool = True, echo=print,
                   resample: bool = False) -> dict[str, int]:
    """Denoise every CT series under `src` into `out/<patient>/<series>/` (each a safe path component); returns how
    many series were written, skipped as done, and skipped slices by reason. A series whose pixel size lies outside
    what the model was trained at is named in one line; `resample` runs the model at its training pixel size there
    (and resamples back)."""
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} lies inside --in {src}: a re-run would denoise its own output again; choose an "
                         "--out outside the input folder.")
    path = checkpoint_for(name, checkpoint)
    digest = sha256_file(path) if path else None
    if path and training_record(path) is None:
        echo(f"note: {path} has no manifest.json beside it that names it, so its sha256 cannot be checked against a "
             f"training record; it is loaded as given (sha256 {digest}, recorded with every series written).")
    cls = get_method(name)
    method = (cls.load(path, device) if path else cls(None, device)).for_inference()
    domain = training_domain(path) if path else None
    report = scan_folder(src, "dicom")
    frames = [r for r in report.slices if r.frame is not None]
    if frames:
        raise ValueError(f"{frames[0].path} is an enhanced multi-frame CT; `denoise` writes single-frame series only "
                         "(import it with `ldct-bench data import` to score methods on it).")
    series: dict[tuple[str, str], list[SliceRecord]] = defaultdict(list)
    for r in report.slices:
        series[(r.patient, r.series)].append(r)
    _remove_stale_writes(out)
    done = skipped = 0
    what = f"ldct-bench {name} denoised" + (f" ({path.parent.name})" if path else "")
    record = {"method": name, "checkpoint": str(path) if path else None, "sha256": digest}
    for (patient, uid), records in tqdm(sorted(series.items()), desc=f"{name}: denoising", unit="series",
                                        disable=not progress):
        folder = out / patient / safe(uid)  # the patient key is already one safe component (scan_folder)
        if _complete(folder, len(records)):
            skipped += 1
            continue
        records = sorted(records, key=lambda r: r.z)
        where = f"series {uid} of patient {patient}"
        kernel = acquisition_headers(records[0].path)["kernel"] if domain else None
        outside = outside_domain(domain, records[0].pixel_mm, kernel)
        off_pixels = bool(outside_domain(domain, records[0].pixel_mm))  # what resampling could answer
        ratio = records[0].pixel_mm / domain["pixel_mm"][0] if off_pixels and resample else 1.0
        if outside:
            echo(f"note: {where}: {outside} ({name}, {path.parent.name})"
                 + (f"; run at {domain['pixel_mm'][0]:.2f} mm and resampled back (--resample)" if ratio != 1.0 else
                    "; --resample runs the model at its training pixel size" if off_pixels else ""))
        images = denoise_series(method, read_volume(records), where, batch_size, seed, device, ratio)
        record["resampled_to_mm"] = domain["pixel_mm"][0] if ratio != 1.0 else None
        tmp = folder.parent / f".{folder.name}.writing-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            write_series(images, [r.path for r in records], tmp, what,
                         derivation=f"{what}; checkpoint {path if path else 'none (no weights)'}"
                                    + (f" sha256 {digest}" if digest else ""))
            atomic_write_json(tmp / COMPLETE, {**record, "source_series": uid, "slices": len(records)})
            if folder.exists():  # an unfinished folder of that name (no completion record): replaced
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        done += 1
    echo(f"{done} series written to {out}, {skipped} already there" + (f"; {report.summary()}" if report.skipped else ""))
    return {"written": done, "already_there": skipped, **{k: len(v) for k, v in report.skipped.items()}}


def _complete(folder: Path, slices: int) -> bool:
    """Whether `folder` holds a finished series of `slices` slices: its completion record says so (a folder that
    merely exists, emptied or cut short, is not done)."""
    try:
        return json.loads((folder / COMPLETE).read_text()).get("slices") == slices \
            and len(list(folder.glob("*.dcm"))) == slices
    except (OSError, ValueError, AttributeError):
        return False


def _remove_stale_writes(out: Path) -> None:
    """Hidden `.<series>.writing-<pid>` folders whose process is gone (killed mid-series) are removed."""
    for tmp in out.glob("*/.*.writing-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def denoise_series(method: Method, volume: np.ndarray, where: str, batch_size: int, seed: int,
                   device: str, ratio: float = 1.0) -> np.ndarray:
    """(S, H, W) HU -> (S, H, W) HU, each slice with its neighbours when the method reads context (edges repeated,
    as the dataset loader does); `ratio` != 1 runs the method on slices resampled by it (denoise_resampled)."""
    stack = torch.from_numpy(np.ascontiguousarray(volume[neighbour_index(len(volume), method.context)],
                                                  dtype=np.float32))
    return denoise_resampled(method, stack, where, batch_size, seed, device, ratio)[:, 0].numpy()
