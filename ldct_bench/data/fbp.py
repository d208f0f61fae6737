"""Fan-beam filtered back-projection for an equi-angular (arc) detector.

Kak & Slaney, "Principles of Computerized Tomographic Imaging", ch. 3.4.1:
  1. weight each ray by D cos(gamma),
  2. convolve along gamma with g(n a) = 1/(8a^2) (n=0), 0 (n even), -1/(2 pi^2 sin^2(n a)) (n odd),
     apodised in frequency (Hann or Shepp-Logan window),
  3. back-project with weight 1/L^2 over the full turn (L = source-to-pixel distance).

The pixel geometry (fan angle of every pixel in every view, and 1/L^2) depends only on
the geometry, so it is computed once per chunk of views and shared by every sinogram
in the batch: simulating several doses of one slice costs little more than one.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .geometry import FanBeamGeometry

try:  # numba is the fast CPU back-projector; torch is the portable (and CUDA) one
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency
    numba = None

WINDOWS = ("ram-lak", "shepp-logan", "hann")


@lru_cache(maxsize=8)
def _filter_response(n_channels: int, dgamma: float, window: str, n_fft: int) -> torch.Tensor:
    n = torch.arange(-(n_channels - 1), n_channels, dtype=torch.float64)
    g = torch.zeros_like(n)
    g[n == 0] = 1.0 / (8 * dgamma**2)
    odd = (n.abs() % 2) == 1
    g[odd] = -1.0 / (2 * math.pi**2 * torch.sin(n[odd] * dgamma) ** 2)
    kernel = torch.zeros(n_fft, dtype=torch.float64)
    kernel[: n_channels] = g[n_channels - 1:]
    kernel[-(n_channels - 1):] = g[: n_channels - 1]
    response = torch.fft.rfft(kernel).real * dgamma
    f = torch.fft.rfftfreq(n_fft, dtype=torch.float64) * 2  # 0..1 of Nyquist
    if window == "hann":
        response = response * 0.5 * (1 + torch.cos(math.pi * f))
    elif window == "shepp-logan":
        response = response * torch.sinc(f / 2)
    elif window != "ram-lak":
        raise ValueError(f"fbp: unknown filter window {window!r}; choose one of {', '.join(WINDOWS)}.")
    return response


def filter_sinogram(geom: FanBeamGeometry, sino: torch.Tensor, window: str = "hann") -> torch.Tensor:
    """Cosine-weight and ramp-filter sinograms (B, V, C) along the channel axis."""
    n_fft = 1 << (2 * geom.n_channels - 1).bit_length()
    gamma = geom.channel_angles().to(sino.device)
    weighted = sino * (geom.source_iso_mm * torch.cos(gamma)).to(sino.dtype)
    resp = _filter_response(geom.n_channels, geom.dgamma, window, n_fft).to(sino.device)
    spec = torch.fft.rfft(weighted, n=n_fft, dim=-1) * resp.to(torch.promote_types(sino.dtype, torch.float32))
    return torch.fft.irfft(spec, n=n_fft, dim=-1)[..., : geom.n_channels].to(sino.dtype)


def backproject(geom: FanBeamGeometry, q: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Distance-weighted fan-beam back-projection of filtered sinograms (B, V, C) -> (B, H, W).

    backend: "numba" (CPU, parallel over pixels), "torch" (any device), or "auto".
    """
    if backend == "auto":
        backend = "numba" if (numba is not None and q.device.type == "cpu") else "torch"
    if backend == "numba":
        return _backproject_numba(geom, q)
    if backend != "torch":
        raise ValueError(f"fbp: unknown back-projection backend {backend!r}; use auto, numba or torch.")
    return _backproject_torch(geom, q)


def _backproject_numba(geom: FanBeamGeometry, q: torch.Tensor) -> torch.Tensor:
    x, y = (z.numpy().reshape(-1) for z in geom.pixel_centres())
    beta = geom.view_angles().numpy()
    qv = np.ascontiguousarray(q.detach().to(torch.float32).permute(1, 2, 0).numpy())  # (V, C, B)
    out = _bp_kernel()(qv, x, y, np.cos(beta), np.sin(beta), geom.source_iso_mm, geom.dgamma)
    out *= 2 * math.pi / geom.n_views
    img = torch.from_numpy(out.T.copy()).reshape(q.shape[0], geom.image_size, geom.image_size)
    return img.to(q.dtype)


@lru_cache(maxsize=1)
def _bp_kernel():
    @numba.njit(parallel=True, fastmath=True, cache=True)
    def kernel(qv, x, y, cos_b, sin_b, dist, dgamma):
        n_v, n_c, n_b = qv.shape
        n_p = x.shape[0]
        out = np.zeros((n_p, n_b), dtype=np.float64)
        centre = (n_c - 1) / 2.0
        top = n_c - 1.000001
        inv_dg = 1.0 / dgamma
        for p in numba.prange(n_p):
            px, py = x[p], y[p]
            acc = np.zeros(n_b, dtype=np.float64)
            for v in range(n_v):
                along = dist - (px * cos_b[v] + py * sin_b[v])
                across = px * sin_b[v] - py * cos_b[v]
                inv_l2 = 1.0 / (along * along + across * across)
                pos = np.arctan2(across, along) * inv_dg + centre
                pos = min(max(pos, 0.0), top)
                i0 = int(pos)
                w1 = (pos - i0) * inv_l2
                w0 = inv_l2 - w1
                for b in range(n_b):
                    acc[b] += qv[v, i0, b] * w0 + qv[v, i0 + 1, b] * w1
            out[p] = acc
        return out

    return kernel


def _backproject_torch(geom: FanBeamGeometry, q: torch.Tensor, views_per_chunk: int = 64) -> torch.Tensor:
    dev, dt = q.device, q.dtype
    bsz = q.shape[0]
    x, y = (z.to(dev, dt).reshape(-1) for z in geom.pixel_centres())
    beta = geom.view_angles().to(dev)
    n_c = geom.n_channels
    centre = (n_c - 1) / 2
    out = torch.zeros(bsz, x.numel(), device=dev, dtype=dt)
    q_flat = q.reshape(bsz, -1)
    for v0 in range(0, geom.n_views, views_per_chunk):
        b = beta[v0:v0 + views_per_chunk].to(dt)
        cb, sb = torch.cos(b)[:, None], torch.sin(b)[:, None]
        # vector from source to pixel, in the frame of the central ray (-cos b, -sin b)
        along = geom.source_iso_mm - (x * cb + y * sb)
        across = x * sb - y * cb
        inv_l2 = 1.0 / (along * along + across * across)
        pos = torch.atan2(across, along) / geom.dgamma + centre
        pos = pos.clamp_(0, n_c - 1.000001)
        i0 = pos.floor()
        frac = pos - i0
        idx = i0.long() + (torch.arange(v0, v0 + len(b), device=dev) * n_c)[:, None]
        w1 = frac * inv_l2
        w0 = inv_l2 - w1
        g0 = q_flat[:, idx]  # (B, v, P)
        g1 = q_flat[:, idx + 1]
        out += (g0 * w0 + g1 * w1).sum(1)
    out *= 2 * math.pi / geom.n_views
    return out.reshape(bsz, geom.image_size, geom.image_size)


def fbp(geom: FanBeamGeometry, sino: torch.Tensor, window: str = "hann") -> torch.Tensor:
    """Line integrals (B, V, C) -> attenuation images (B, H, W) in 1/mm."""
    squeeze = sino.dim() == 2
    if squeeze:
        sino = sino[None]
    img = backproject(geom, filter_sinogram(geom, sino, window))
    return img[0] if squeeze else img
