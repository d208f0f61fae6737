"""Score a batch of denoised slices against full-dose slices: every window, every metric, one pass each."""

from __future__ import annotations

import torch

from .fidelity import check_pair, to_unit
from .registry import DEFAULT_METRICS, get_metric
from .windows import Window


@torch.inference_mode()
def score_batch(pred_hu: torch.Tensor, ref_hu: torch.Tensor, windows: list[Window],
                metrics: tuple[str, ...] = DEFAULT_METRICS, dtype=torch.float64) -> dict[tuple[str, str], torch.Tensor]:
    """{(window name, metric name): (N,) scores} for HU batches (N, 1, H, W).

    Metrics whose minimum image size exceeds the slices are skipped (and so absent).
    """
    check_pair(pred_hu, ref_hu)
    pred, ref = pred_hu.to(dtype), ref_hu.to(dtype)
    chosen = [get_metric(m) for m in metrics]
    out = {}
    for window in windows:
        pu, ru = to_unit(pred, window), to_unit(ref, window)
        for m in chosen:
            if min(pred.shape[-2:]) >= m.min_size:
                out[(window.name, m.name)] = m.fn(pu, ru, window).detach().cpu().double()
    return out
