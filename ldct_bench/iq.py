"""Task-based image quality of a run (--iq): each method denoises every realisation of the image-quality phantom
at every dose of the run, and the ensemble is scored by the observer, the NPS and the TTF (metrics/task.py).

One IQ cell is one (method, dose); its metrics file is written last, so its presence means the cell is complete.
The full-dose FBP is scored once per run as the method 'full dose' at dose 1: the reference the f_mean shift of
every other cell is measured against (over-smoothing lowers f_mean: the "plastic look").
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import RunConfig
from .conventions import dose_label
from .data.dataset import neighbour_index
from .data.geometry import FanBeamGeometry
from .data.iq_phantom import CLASSES, DISKS, NPS_ROI_MM, RODS, IQConfig, IQPhantomSet, to_pixel
from .evaluate import denoise_stack
from .methods import Method
from .metrics.task import channel_width, channelize, cho, crop, lg_channels, nps_2d, radial_nps, ttf_circular_edge
from .results import FULL_DOSE, RunStore


def iq_config(config: RunConfig) -> IQConfig:
    """The run's image-quality set: its realisations and seed, through the simulator of its embedded data."""
    return IQConfig(realisations=config.iq_realisations, seed=config.seed, simulator=config.phantoms.simulator)


def iq_set(config: RunConfig, progress: bool = True) -> IQPhantomSet:
    """The phantom's realisations at every dose of the run, simulated where missing."""
    return IQPhantomSet.build(iq_config(config), config.protocol.doses, cache_dir=config.cache_dir, progress=progress)


def evaluate_iq(store: RunStore, method: Method, iqs: IQPhantomSet, config: RunConfig, *, label: str | None = None,
                progress: bool = True) -> dict[str, float]:
    """Denoise the phantom set at every dose of the run and score it, stored as `label`; returns the seconds spent."""
    name = label or method.name
    spent = {"iq_denoise_s": 0.0, "iq_score_s": 0.0}
    reference = store.read_iq(FULL_DOSE, 1.0)
    for dose in tqdm(config.protocol.doses, desc=f"{name} (image quality)", unit="dose", disable=not progress):
        if store.has_iq(name, dose):
            continue
        t = time.perf_counter()
        where = f"the image-quality phantom at {dose_label(dose)}"
        images = {c: denoise_stack(method, neighbours(iqs.images(c, dose), method.context), where, config.batch_size,
                                   config.seed, config.device)[:, 0].numpy() for c in CLASSES}
        spent["iq_denoise_s"] += time.perf_counter() - t
        t = time.perf_counter()
        rows, curves = score_iq(images["present"], images["absent"], iqs.geometry, seed=config.seed)
        rows = with_shift(rows, reference)
        store.write_iq(name, dose, label_rows(rows, store.name, name, dose, config.protocol.is_seen(dose)),
                       curves.assign(method=name, dose=dose))
        spent["iq_score_s"] += time.perf_counter() - t
    return spent


def evaluate_reference(store: RunStore, iqs: IQPhantomSet, config: RunConfig) -> None:
    """The full-dose FBP scored once per run (the reference of the shifts, and the full-dose line of the figures)."""
    if store.has_iq(FULL_DOSE, 1.0):
        return
    rows, curves = score_iq(iqs.images("present", 1.0), iqs.images("absent", 1.0), iqs.geometry, seed=config.seed)
    store.write_iq(FULL_DOSE, 1.0, label_rows(rows, store.name, FULL_DOSE, 1.0, True),
                   curves.assign(method=FULL_DOSE, dose=1.0))


def neighbours(images: np.ndarray, context: int) -> torch.Tensor:
    """(R, H, W) realisations -> (R, 1 + 2 context, H, W) inputs: the phantom is uniform along z, so realisation
    i's neighbouring slices are realisations i-k .. i+k of its class (wrapping round, so every one has them)."""
    return torch.from_numpy(np.ascontiguousarray(images[neighbour_index(len(images), context, wrap=True)],
                                                 dtype=np.float32))


def score_iq(present: np.ndarray, absent: np.ndarray, geom: FanBeamGeometry, seed: int = 0
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics (target, metric, value, ci_low, ci_high, n) and curves (kind, target, frequency, value) of the
    realisations (R, H, W) of both classes."""
    rows, curves = [], []
    px = geom.pixel_mm
    half = 2 * math.ceil(max(d.radius for d in DISKS) / px)  # ROI: twice the largest disk's diameter
    for disk in DISKS:
        centre = to_pixel(geom, disk.x, disk.y)
        channels = lg_channels(2 * half + 1, channel_width(disk.radius / px))
        det = cho(channelize(crop(present, *centre, half), channels),
                  channelize(crop(absent, *centre, half), channels), seed=seed)
        rows += [(disk.name, "cho_dprime", det.dprime, *det.dprime_ci, det.n),
                 (disk.name, "cho_auc", det.auc, *det.auc_ci, det.n)]
    nps_half = round(NPS_ROI_MM / px / 2)
    centre = to_pixel(geom, 0.0, 0.0)
    nps = radial_nps((nps_2d(crop(present, *centre, nps_half), px) + nps_2d(crop(absent, *centre, nps_half), px)) / 2,
                     px)
    n = min(len(present), len(absent))
    rows += [("uniform", "nps_noise", nps.noise, np.nan, np.nan, 2 * n),
             ("uniform", "nps_fpeak", nps.f_peak, np.nan, np.nan, 2 * n),
             ("uniform", "nps_fmean", nps.f_mean, np.nan, np.nan, 2 * n)]
    curves.append(pd.DataFrame({"kind": "nps", "target": "uniform", "frequency": nps.frequency, "value": nps.radial}))
    mean = np.concatenate([present, absent]).mean(0)
    for rod in RODS:
        ttf = ttf_circular_edge(mean, *to_pixel(geom, rod.x, rod.y), rod.radius / px, px)
        rows += [(rod.name, "ttf50", ttf.ttf50, np.nan, np.nan, 2 * n),
                 (rod.name, "ttf10", ttf.ttf10, np.nan, np.nan, 2 * n)]
        curves.append(pd.DataFrame({"kind": "ttf", "target": rod.name, "frequency": ttf.frequency, "value": ttf.ttf}))
    metrics = pd.DataFrame(rows, columns=["target", "metric", "value", "ci_low", "ci_high", "n"])
    return metrics, pd.concat(curves, ignore_index=True)


def with_shift(rows: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """`rows` and their f_mean shift against the full-dose FBP's (negative: coarser, blotchier noise)."""
    f_ref = reference.loc[reference["metric"] == "nps_fmean", "value"].iloc[0]
    shift = rows[rows["metric"] == "nps_fmean"].assign(metric="nps_fmean_shift")
    shift["value"] = shift["value"] - f_ref
    return pd.concat([rows, shift], ignore_index=True)


def label_rows(rows: pd.DataFrame, run: str, method: str, dose: float, seen: bool) -> pd.DataFrame:
    return rows.assign(run=run, method=method, dose=float(dose), seen_dose=bool(seen))
