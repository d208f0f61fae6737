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


def ssim_setup(kind: str, dtype=torch.float64):
    k = _kernel_1d(kind, dtype)
    n = k.numel() ** 2
    return k, (n / (n - 1) if kind == "uniform" else 1.0)


def ssim(pu: torch.Tensor, ru: torch.Tensor, kind: str = "gaussian", k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per image of unit-range images (N, 1, H, W), by separable convolutions."""
    k, cov_norm = ssim_setup(kind, pu.dtype)
    if min(pu.shape[-2:]) < k.numel():
        raise ValueError(f"ssim: images of {tuple(pu.shape[-2:])} are smaller than the {k.numel()}-pixel window.")
    return ssim_conv(pu, ru, k.to(pu.device), cov_norm, k1, k2)


class WindowedPair:
    """A (prediction, reference) batch in HU seen through one window; metric functions read from it.

    `pu`/`ru` (unit-range copies) are made only if a metric asks for them. On CPU, MSE and
    SSIM come from one fused numba pass over the raw HU arrays (no copies at all); on CUDA
    from the convolution version. Results are cached, so RMSE and PSNR share one MSE.
    """

    def __init__(self, pred_hu: torch.Tensor, ref_hu: torch.Tensor, window: Window):
        self.pred, self.ref, self.window = pred_hu, ref_hu, window
        self._cache: dict = {}

    @property
    def pu(self) -> torch.Tensor:
        if "pu" not in self._cache:
            self._cache["pu"] = to_unit(self.pred.double(), self.window)
        return self._cache["pu"]

    @property
    def ru(self) -> torch.Tensor:
        if "ru" not in self._cache:
            self._cache["ru"] = to_unit(self.ref.double(), self.window)
        return self._cache["ru"]

    def _fused(self, kind: str) -> bool:
        if self.pred.device.type != "cpu" or _numba_ssim() is None:
            return False
        k, cov_norm = ssim_setup(kind)
        if min(self.pred.shape[-2:]) < k.numel():
            raise ValueError(f"ssim: images of {tuple(self.pred.shape[-2:])} are smaller than the {k.numel()}-pixel window.")
        mse, s = _numba_ssim()(self.pred[:, 0].float().contiguous().numpy(), self.ref[:, 0].float().contiguous().numpy(),
                                float(self.window.lo), float(self.window.width), k.numpy(), cov_norm, 0.01**2, 0.03**2)
        self._cache["mse"] = torch.from_numpy(mse)
        self._cache[f"ssim_{kind}"] = torch.from_numpy(s)
        return True

    def mse(self) -> torch.Tensor:
        if "mse" not in self._cache and not self._fused("gaussian"):
            self._cache["mse"] = mse_unit(self.pu, self.ru)
        return self._cache["mse"]

    def ssim(self, kind: str = "gaussian") -> torch.Tensor:
        key = f"ssim_{kind}"
        if key not in self._cache and not self._fused(kind):
            self._cache[key] = ssim(self.pu, self.ru, kind)
        return self._cache[key]


def ssim_conv(pu, ru, k, cov_norm, k1, k2):
    """The straightforward version: five separable 'valid' convolutions, then the SSIM map."""
    stats = _filter(torch.cat([pu, ru, pu * pu, ru * ru, pu * ru], dim=1), k)
    ux, uy, uxx, uyy, uxy = stats.unbind(1)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = k1**2, k2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


# fastmath without "reassoc": the per-slice sums run in pixel order. With it, LLVM regrouped them differently
# when the kernel was compiled in the process than when numba loaded it from its cache, so a first run and
# later ones disagreed in SSIM's last bits (2e-15). The filters still vectorise: each output pixel is its own sum.
EXACT_SUMS = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}


@lru_cache(maxsize=1)
def _numba_ssim():
    try:
        import numba
        import numpy as np
    except ImportError:  # pragma: no cover - numba is a declared dependency
        return None

    @numba.njit(parallel=True, fastmath=EXACT_SUMS, cache=True)
    def kernel(x_hu, y_hu, lo, width, k, cov_norm, c1, c2):
        """Window (clip to [lo, lo+width], map to [0, 1]), then MSE and mean SSIM, one pass per slice.

        Loops are ordered so the innermost runs over contiguous columns (SIMD-friendly); the sums over a slice
        run in pixel order (EXACT_SUMS), so the same images give the same bits however the kernel was built."""
        n, h, w = x_hu.shape
        r = k.shape[0]
        ho, wo = h - r + 1, w - r + 1
        mse = np.empty(n)
        out = np.empty(n)
        hi = lo + width
        for i in numba.prange(n):
            x = np.empty((h, w))
            y = np.empty((h, w))
            se = 0.0
            for row in range(h):
                for col in range(w):
                    a = (min(max(x_hu[i, row, col], lo), hi) - lo) / width
                    b = (min(max(y_hu[i, row, col], lo), hi) - lo) / width
                    x[row, col] = a
                    y[row, col] = b
                    se += (a - b) * (a - b)
            mse[i] = se / (h * w)
            m = np.zeros((5, h, wo))  # horizontally filtered x, y, xx, yy, xy
            for row in range(h):
                xr, yr = x[row], y[row]
                for t in range(r):
                    kt = k[t]
                    for col in range(wo):
                        a = xr[col + t]
                        b = yr[col + t]
                        m[0, row, col] += kt * a
                        m[1, row, col] += kt * b
                        m[2, row, col] += kt * a * a
                        m[3, row, col] += kt * b * b
                        m[4, row, col] += kt * a * b
            total = 0.0
            u = np.empty((5, wo))
            for row in range(ho):
                u[:] = 0.0
                for t in range(r):
                    kt = k[t]
                    for j in range(5):
                        src = m[j, row + t]
                        dst = u[j]
                        for col in range(wo):
                            dst[col] += kt * src[col]
                for col in range(wo):
                    ux, uy = u[0, col], u[1, col]
                    vx = cov_norm * (u[2, col] - ux * ux)
                    vy = cov_norm * (u[3, col] - uy * uy)
                    vxy = cov_norm * (u[4, col] - ux * uy)
                    total += ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
            out[i] = total / (ho * wo)
        return mse, out

    return kernel
