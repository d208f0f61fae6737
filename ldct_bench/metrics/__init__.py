"""Metrics: fidelity (PSNR/SSIM/RMSE in HU windows), perceptual (piq), statistics."""

from .engine import score_batch
from .registry import DEFAULT_METRICS, METRICS, Metric, get_metric, register_metric
from .windows import ANATOMY_WINDOWS, WINDOWS, Window, windows_for

__all__ = ["score_batch", "DEFAULT_METRICS", "METRICS", "Metric", "get_metric", "register_metric",
           "ANATOMY_WINDOWS", "WINDOWS", "Window", "windows_for"]
