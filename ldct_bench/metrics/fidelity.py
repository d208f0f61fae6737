"""Vectorised RMSE / PSNR / SSIM for batches (N, 1, H, W) of HU images, in one window.

Conventions (equal to scikit-image, see tests):
  * both images are clipped to the window and mapped to [0, 1] (data_range = window width).
    SSIM is not shift-invariant: ours equals scikit-image on (HU - lo) with data_range = width,
    *not* scikit-image on raw HU values (which are negative in most windows);
  * RMSE is reported in HU; PSNR = 10 log10(range^2 / MSE) and is +inf for identical images;
  * SSIM "gaussian" (default, Wang et al. 2004, most LDCT papers): 11x11 Gaussian window,
    sigma 1.5, K1 = 0.01, K2 = 0.03, population covariance;  SSIM "uniform": 7x7 box window
    with sample covariance (scikit-image's default);  the mean is over the valid interior
    (scikit-image crops the half-window border in the same way).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from .windows import Window


def check_pair(pred: torch.Tensor, ref: torch.Tensor) -> None:
    if pred.shape != ref.shape:
        raise ValueError(f"metrics: prediction shape {tuple(pred.shape)} differs from reference shape {tuple(ref.shape)}.")
    if pred.dim() != 4 or pred.shape[1] != 1:
        raise ValueError(f"metrics: expected (N, 1, H, W) batches, got shape {tuple(pred.shape)}.")
    if pred.shape[0] == 0:
        raise ValueError("metrics: the batch is empty; there is nothing to score.")
    for name, t in (("prediction", pred), ("reference", ref)):
        if not torch.isfinite(t).all():
            bad = (~torch.isfinite(t)).flatten(1).any(1).nonzero().flatten().tolist()
            raise ValueError(f"metrics: the {name} contains NaN or inf (in batch items {bad[:5]}).")


def to_unit(x: torch.Tensor, window: Window) -> torch.Tensor:
    return (x.clamp(window.lo, window.hi) - window.lo) / window.width


def mse_unit(pu: torch.Tensor, ru: torch.Tensor) -> torch.Tensor:
    return ((pu - ru) ** 2).flatten(1).mean(1)


def rmse_hu(mse: torch.Tensor, window: Window) -> torch.Tensor:
    return mse.sqrt() * window.width


def psnr(mse: torch.Tensor) -> torch.Tensor:
    return torch.where(mse > 0, -10.0 * torch.log10(mse), torch.full_like(mse, math.inf))


@lru_cache(maxsize=8)
def _kernel_1d(kind: str, dtype: torch.dtype) -> torch.Tensor:
    if kind == "gaussian":
        sigma, radius = 1.5, int(3.5 * 1.5 + 0.5)
        x = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (x / sigma) ** 2)
    elif kind == "uniform":
        k = torch.ones(7, dtype=torch.float64)
    else:
        raise ValueError(f"ssim: unknown window kind {kind!r}; use gaussian or uniform.")
    return (k / k.sum()).to(dtype)


def _filter(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of (N, C, H, W)."""
    c = x.shape[1]
    kh = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)


def ssim(pu: torch.Tensor, ru: torch.Tensor, kind: str = "gaussian", k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per image of unit-range images (N, 1, H, W)."""
    k = _kernel_1d(kind, pu.dtype).to(pu.device)
    if min(pu.shape[-2:]) < k.numel():
        raise ValueError(f"ssim: images of {tuple(pu.shape[-2:])} are smaller than the {k.numel()}-pixel window.")
    n = k.numel() ** 2
    cov_norm = n / (n - 1) if kind == "uniform" else 1.0
    stats = _filter(torch.cat([pu, ru, pu * pu, ru * ru, pu * ru], dim=1), k)
    ux, uy, uxx, uyy, uxy = stats.unbind(1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = k1**2, k2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
