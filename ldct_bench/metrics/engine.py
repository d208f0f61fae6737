"""Score a batch of denoised slices against full-dose slices: every window, every metric, one pass each."""

from __future__ import annotations

import torch

from .fidelity import WindowedPair, check_pair
from .registry import DEFAULT_METRICS, get_metric
from .windows import Window


@torch.inference_mode()
def score_batch(pred_hu: torch.Tensor, ref_hu: torch.Tensor, windows: list[Window],
                metrics: tuple[str, ...] = DEFAULT_METRICS) -> dict[tuple[str, str], torch.Tensor]:
    """{(window name, metric name): (N,) float64 scores} for HU batches (N, 1, H, W).

    Metrics whose minimum image size exceeds the slices are skipped (and so absent).
    """
    check_pair(pred_hu, ref_hu)
    chosen = [get_metric(m) for m in metrics]
    out = {}
    for window in windows:
        pair = WindowedPair(pred_hu, ref_hu, window)
        for m in chosen:
            if min(pred_hu.shape[-2:]) >= m.min_size:
                out[(window.name, m.name)] = m.fn(pair).detach().cpu().double()
    return out
