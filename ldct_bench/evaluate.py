"""One method over cells of the matrix: denoise every test slice, score it in every window, and write the cell.

A cell's score file is written last, so its presence means the cell is complete (the unit of resume);
before it come what the report and the user read beside the scores: example slices for figures,
DA-CLIP's perception where the method perceives, and with --save-images every denoised slice (as
DICOM with the source's headers when the test slices came from DICOM).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoints import outside_domain
from .config import RunConfig
from .conventions import ANATOMIES, dose_label
from .data.dataset import LDCTDataset, Pairs
from .methods import Method
from .metrics import score_batch, windows_for
from .plan import RunPlan
from .protocol import Cell
from .results import RunStore
from .toolkit import centre_slice


def evaluate_cells(store: RunStore, method: Method, ds: LDCTDataset, cells, plan: RunPlan, *,
                   progress: bool = True, after_cell=None, label: str | None = None,
                   domain: dict | None = None) -> dict[str, float]:
    """Denoise and score each unfinished cell, stored as `label` (default: the method's name); returns the seconds
    spent denoising and scoring. With `config.resample`, a patient whose pixels lie outside the method's training
    `domain` is denoised at the domain's pixel size (denoise_resampled)."""
    config = plan.config
    spent = {"denoise_s": 0.0, "score_s": 0.0}
    name = label or method.name
    flags = plan.data_flags()
    ratios = resample_ratios(ds, domain) if config.resample else {}
    for cell in tqdm(cells, desc=name, unit="cell", disable=not progress):
        if store.has_cell(name, cell.anatomy, cell.dose):
            continue
        pairs = ds.pairs([cell.anatomy], [cell.dose], config.eval_splits, context=method.context, truth=True)
        t = time.perf_counter()
        pred = denoise_all(method, pairs, config, ratios)
        spent["denoise_s"] += time.perf_counter() - t
        t = time.perf_counter()
        rows = score_rows(store.name, name, cell, pairs, pred, config.metrics, flags)
        spent["score_s"] += time.perf_counter() - t
        _write_outputs(store, method, name, ds, cell, pairs, pred, config)
        store.write_cell(name, cell.anatomy, cell.dose, rows)
        if after_cell is not None:
            after_cell()
    return spent


def denoise_all(method: Method, pairs: Pairs, config: RunConfig, ratios: dict | None = None) -> torch.Tensor:
    """Every slice of `pairs`, denoised in batches on the run's device, seeded per cell (same seed, same numbers);
    a patient in `ratios` at that resampling ratio (denoise_resampled)."""
    where = f"{pairs.meta['anatomy'].iloc[0]} at {dose_label(pairs.meta['dose'].iloc[0])}"
    for name, images in (("low-dose input", pairs.ld), ("full-dose reference", pairs.fd)):
        if not torch.isfinite(images).all():
            raise RuntimeError(f"the {name} of {where} holds NaN/inf: the dataset is damaged; delete its folder and "
                               "simulate or import it again.")
    if not ratios:
        return denoise_stack(method, pairs.ld, where, config.batch_size, config.seed, config.device)
    out = torch.empty_like(pairs.fd)
    patients = pairs.meta["patient"].to_numpy()
    for patient in dict.fromkeys(patients):
        rows = torch.from_numpy(np.flatnonzero(patients == patient))
        out[rows] = denoise_resampled(method, pairs.ld[rows], where, config.batch_size, config.seed, config.device,
                                      ratios.get(patient, 1.0))
    return out


def resample_ratios(ds: LDCTDataset, domain: dict | None) -> dict[str, float]:
    """{patient: its pixel size over the domain's} for every patient whose pixels lie outside a training `domain`."""
    pixels = ds.pixel_mm
    if not domain or not domain.get("pixel_mm") or pixels is None:
        return {}
    per_patient = pixels if isinstance(pixels, dict) else {p: pixels for a in ds.anatomies
                                                          for p in ds.patients(a, ("train", "val", "test"))}
    return {p: mm / domain["pixel_mm"][0] for p, mm in per_patient.items() if outside_domain(domain, mm)}


def denoise_stack(method: Method, ld: torch.Tensor, where: str, batch_size: int, seed: int, device: str) -> torch.Tensor:
    """Low-dose inputs (N, C, H, W) denoised in batches on `device`, seeded (same seed, same numbers); one sentence
    naming `where` if the method returns NaN/inf."""
    torch.manual_seed(seed)
    pred = torch.cat([method.denoise(ld[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(ld), batch_size)])
    if not torch.isfinite(pred).all():
        raise RuntimeError(f"{method.name} produced NaN/inf on {where}; its checkpoint may be broken.")
    return pred


def denoise_resampled(method: Method, ld: torch.Tensor, where: str, batch_size: int, seed: int, device: str,
                      ratio: float) -> torch.Tensor:
    """`denoise_stack` run at another pixel size: the slices (N, C, H, W) resampled by `ratio` (their pixel size over
    the one the method was trained at; area-averaged where it shrinks them), denoised there, and brought back to
    H x W (bicubic). A ratio of 1 is plain denoise_stack."""
    if abs(ratio - 1) < 1e-6:
        return denoise_stack(method, ld, where, batch_size, seed, device)
    h, w = ld.shape[-2:]
    size = (max(8, round(h * ratio)), max(8, round(w * ratio)))
    small = F.interpolate(ld, size=size, mode="area") if ratio < 1 else F.interpolate(ld, size=size, mode="bicubic")
    out = denoise_stack(method, small.contiguous(), where, batch_size, seed, device)
    return F.interpolate(out, size=(h, w), mode="bicubic") if ratio < 1 else F.interpolate(out, size=(h, w), mode="area")


def score_rows(run: str, name: str, cell: Cell, pairs: Pairs, pred: torch.Tensor, metrics,
               flags: dict | None = None) -> pd.DataFrame:
    """The cell's tidy rows: one per slice, reference (the full dose; the truth where the data has it), window
    and metric, marked with what training saw (`flags`: seen_data, acquisition, seen_acquisition; default: the
    training data itself, through the default acquisition)."""
    flags = {"seen_data": True, "acquisition": "default", "seen_acquisition": True, **(flags or {})}
    references = {"full_dose": pairs.fd, **({"truth": pairs.truth} if pairs.truth is not None else {})}
    return pd.concat([pd.DataFrame({
        "run": run, "method": name, "anatomy": cell.anatomy, "dose": cell.dose, "seen_dose": cell.seen_dose,
        "seen_anatomy": cell.seen_anatomy, **flags,
        "patient": pairs.meta["patient"].to_numpy(), "slice": pairs.meta["slice"].to_numpy(), "reference": ref,
        "window": w, "metric": m, "value": v.numpy()})
        for ref, target in references.items()
        for (w, m), v in score_batch(pred, target, windows_for(cell.anatomy), tuple(metrics)).items()],
        ignore_index=True)


def _write_outputs(store: RunStore, method: Method, name: str, ds: LDCTDataset, cell: Cell, pairs: Pairs,
                   pred: torch.Tensor, config: RunConfig) -> None:
    _save_examples(store, name, cell, pairs, pred, config.examples)
    if config.save_images:
        store.write_images(name, cell.anatomy, cell.dose, pred[:, 0].numpy(), pairs.meta)
        _save_dicom(store, ds, name, cell, pairs.meta, pred[:, 0].numpy())
    perception = method.perceive(centre_slice(pairs.ld))  # DA-CLIP's, for the embedding plots (cheap)
    if perception is not None and name == method.name:  # the generalist's perception (a specialist's would mix in)
        store.write_perception(cell.anatomy, cell.dose, _perception_rows(perception, cell, pairs.meta))


def _save_examples(store: RunStore, name: str, cell: Cell, pairs: Pairs, pred: torch.Tensor, n: int) -> None:
    """The middle slice of the first `n` test patients: prediction, and (once per cell) the input and target."""
    picks = []
    for patient in pairs.meta["patient"].unique()[:n]:
        rows = np.flatnonzero(pairs.meta["patient"].to_numpy() == patient)
        picks.append(rows[len(rows) // 2])
    store.write_examples(name, cell.anatomy, cell.dose, {"pred": pred[picks, 0].numpy()})
    if store.examples("_input", cell.anatomy, cell.dose) is None:
        store.write_examples("_input", cell.anatomy, cell.dose, {"ld": centre_slice(pairs.ld[picks])[:, 0].numpy(),
                                                                 "fd": pairs.fd[picks, 0].numpy()})


def _save_dicom(store: RunStore, ds: LDCTDataset, name: str, cell: Cell, meta: pd.DataFrame, images: np.ndarray) -> None:
    """When the test slices came from DICOM: one derived series per patient, headers copied from the sources."""
    from .data.dicom_export import write_series
    from .data.simulate import dose_key

    for patient in meta["patient"].unique():
        rows = np.flatnonzero(meta["patient"].to_numpy() == patient)
        sources = ds.source_files(cell.anatomy, patient, dose_key(cell.dose))
        if sources is None:
            return  # simulated phantoms have no DICOM to copy
        write_series(images[rows], [sources[i] for i in meta["slice"].to_numpy()[rows]],
                     store.images_dir(name, cell.anatomy, cell.dose) / str(patient),
                     f"ldct-bench {name} denoised ({dose_label(cell.dose)} dose)")


def _perception_rows(out: dict, cell: Cell, meta: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"anatomy": cell.anatomy, "dose": cell.dose, "seen": cell.seen_dose,
                         "patient": meta["patient"].to_numpy(), "slice": meta["slice"].to_numpy(),
                         "dose_score": out["dose_score"].cpu().numpy(),
                         "estimated_dose": out["estimated_dose"].cpu().numpy(),
                         "estimated_anatomy": [ANATOMIES[i] for i in out["estimated_anatomy"].cpu().numpy()],
                         **{f"dose_emb_{i}": out["dose"][:, i].cpu().numpy() for i in range(out["dose"].shape[1])}})
