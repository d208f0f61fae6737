"""Fan-beam filtered back-projection for an equi-angular (arc) detector.

Kak & Slaney, "Principles of Computerized Tomographic Imaging", ch. 3.4.1:
  1. weight each ray by D cos(gamma),
  2. convolve along gamma with g(n a) = 1/(8a^2) (n=0), 0 (n even), -1/(2 pi^2 sin^2(n a)) (n odd),
     apodised in frequency by the filter window (Hann or Shepp-Logan),
  3. back-project with weight 1/L^2 over the full turn (L = source-to-pixel distance).

The pixel geometry (fan angle of every pixel in every view, and 1/L^2) depends only on
the geometry, so it is computed once per row and view and shared by every sinogram in
the batch, which the CPU kernel reads interleaved (a channel's value in every sinogram
side by side): a patient's slices at all their doses back-project in one pass, each
image getting exactly the bytes it would get alone.
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

# the ramp filter's apodisation ("filter window"; not to be confused with the HU windows of the metrics)
FILTER_WINDOWS = ("ram-lak", "shepp-logan", "hann")


@lru_cache(maxsize=8)
def _filter_response(n_channels: int, dgamma: float, filter_window: str, n_fft: int,
                     cutoff: float = 1.0) -> torch.Tensor:
    """The ramp's frequency response apodised by `filter_window`, stretched to end at `cutoff` (a fraction of Nyquist;
    1 leaves it as it is, bit for bit): a smooth kernel is a window cut off below Nyquist."""
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
    if not 0 < cutoff <= 1:
        raise ValueError(f"fbp: filter cut-off {cutoff} is not in (0, 1] of Nyquist.")
    if cutoff < 1:
        response = response * (f <= cutoff)
        f = f / cutoff
    if filter_window == "hann":
        response = response * 0.5 * (1 + torch.cos(math.pi * f))
    elif filter_window == "shepp-logan":
        response = response * torch.sinc(f / 2)
    elif filter_window != "ram-lak":
        raise ValueError(f"fbp: unknown filter window {filter_window!r}; choose one of {', '.join(FILTER_WINDOWS)}.")
    return response


def filter_sinogram(geom: FanBeamGeometry, sino: torch.Tensor, filter_window: str = "hann",
                    per_call: int = 4, cutoff: float = 1.0) -> torch.Tensor:
    """Cosine-weight and ramp-filter sinograms (B, V, C) along the channel axis (`per_call` at a time: the padded
    spectra take about four times a sinogram's memory, and each sinogram's result does not depend on the batch)."""
    if sino.shape[0] > per_call:
        return torch.cat([filter_sinogram(geom, part, filter_window, per_call, cutoff) for part in sino.split(per_call)])
    n_fft = 1 << (2 * geom.n_channels - 1).bit_length()
    gamma = geom.channel_angles().to(sino.device)
    weighted = sino * (geom.source_iso_mm * torch.cos(gamma)).to(sino.dtype)
    resp = _filter_response(geom.n_channels, geom.dgamma, filter_window, n_fft, cutoff).to(sino.device)
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


def _backproject_numba(geom: FanBeamGeometry, q: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """Row-parallel back-projection. Along an image row the source-frame coordinates are linear in x, and the
    fan angle atan(across/along) is an odd polynomial (error < 3e-8 rad, 1/40000 of a channel, for |tan| <= 0.5),
    so the inner loop over pixels is branch-free arithmetic that vectorises. Wider fans (a 440 mm field of view
    reaches |tan| = 0.61) are range-reduced by the half-angle identity atan z = 2 atan(z / (1 + sqrt(1 + z^2))),
    which brings any |tan| <= 4/3 into the polynomial's range; only wider ones take the exact kernel."""
    x, y = geom.pixel_centres()
    xs, ys = x[0].numpy(), np.ascontiguousarray(y[:, 0].numpy())  # x of each column, y of each row (row 0 on top)
    beta = geom.view_angles().numpy()
    qv = q.detach().to(torch.float32).numpy()  # (B, V, C)
    r = np.abs(xs).max() * math.sqrt(2)  # the corner pixels see the widest fan angle, asin(r / D)
    max_tan = r / math.sqrt(max(geom.source_iso_mm**2 - r * r, 1e-9))
    if exact or max_tan > 4 / 3:
        out = _bp_kernel_exact()(np.ascontiguousarray(qv), xs, ys, np.cos(beta), np.sin(beta), geom.source_iso_mm,
                                 geom.dgamma)
    else:
        qt = np.ascontiguousarray(qv.transpose(1, 2, 0))  # (V, C, B): a channel's value in every sinogram, together
        out = _bp_kernel()(qt, xs, ys, np.cos(beta), np.sin(beta), geom.source_iso_mm, geom.dgamma, max_tan > 0.5)
    out *= 2 * math.pi / geom.n_views
    return torch.from_numpy(out).to(q.dtype)


@lru_cache(maxsize=1)
def _bp_kernel():
    # atan(z) = sum_k (-1)^k z^(2k+1) / (2k+1): 11 terms leave < 0.5^23/23 = 5e-9 at |z| <= 0.5
    coef = np.array([(-1.0) ** k / (2 * k + 1) for k in range(11)])

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def kernel(qt, xs, ys, cos_b, sin_b, dist, dgamma, halve):
        n_v, n_c, n_b = qt.shape
        n_r, n_x = ys.shape[0], xs.shape[0]
        centre = (n_c - 1) / 2.0
        top = n_c - 1.000001
        inv_dg = (2.0 if halve else 1.0) / dgamma
        out = np.empty((n_b, n_r, n_x), dtype=np.float64)
        for r in numba.prange(n_r):  # rows in parallel; each pixel sums its views in order, on any core count
            py = ys[r]
            acc = np.zeros((n_x, n_b), dtype=np.float64)
            i0 = np.empty(n_x, dtype=np.int64)
            w0 = np.empty(n_x, dtype=np.float64)
            w1 = np.empty(n_x, dtype=np.float64)
            for v in range(n_v):
                cb, sb = cos_b[v], sin_b[v]
                a0, c0 = dist - py * sb, -py * cb
                for j in range(n_x):  # geometry of the whole row: pure arithmetic, vectorised
                    along = a0 - xs[j] * cb
                    across = c0 + xs[j] * sb
                    z = across / along
                    if halve:  # loop-invariant: compiled out of the loop (unswitched)
                        z = z / (1.0 + math.sqrt(1.0 + z * z))
                    z2 = z * z
                    poly = coef[10]
                    for k in range(9, -1, -1):
                        poly = poly * z2 + coef[k]
                    pos = min(max(z * poly * inv_dg + centre, 0.0), top)
                    i = int(pos)
                    inv_l2 = 1.0 / (along * along + across * across)
                    i0[j] = i
                    w1[j] = (pos - i) * inv_l2
                    w0[j] = inv_l2 - w1[j]
                q = qt[v]
                if n_b == 1:  # one sinogram: vectorise the gather over the pixels instead
                    for j in range(n_x):
                        acc[j, 0] += q[i0[j], 0] * w0[j] + q[i0[j] + 1, 0] * w1[j]
                    continue
                for j in range(n_x):  # the gather: one pair of channels serves every sinogram (contiguous)
                    lo, hi, a, c = q[i0[j]], q[i0[j] + 1], w0[j], w1[j]
                    for b in range(n_b):
                        acc[j, b] += lo[b] * a + hi[b] * c
            out[:, r, :] = acc.T
        return out

    return kernel


@lru_cache(maxsize=1)
def _bp_kernel_exact():
    """The straightforward version (arctan2 per pixel and view): the reference the fast kernel is tested against,
    and the fall-back for fans wider than the polynomial covers."""

    @numba.njit(parallel=True, fastmath=False, cache=True)
    def kernel(qv, xs, ys, cos_b, sin_b, dist, dgamma):
        n_b, n_v, n_c = qv.shape
        n_r, n_x = ys.shape[0], xs.shape[0]
        out = np.zeros((n_b, n_r, n_x), dtype=np.float64)
        centre = (n_c - 1) / 2.0
        top = n_c - 1.000001
        for r in numba.prange(n_r):
            for j in range(n_x):
                px, py = xs[j], ys[r]
                for v in range(n_v):
                    along = dist - (px * cos_b[v] + py * sin_b[v])
                    across = px * sin_b[v] - py * cos_b[v]
                    inv_l2 = 1.0 / (along * along + across * across)
                    pos = min(max(math.atan2(across, along) / dgamma + centre, 0.0), top)
                    i0 = int(pos)
                    w1 = (pos - i0) * inv_l2
                    for b in range(n_b):
                        out[b, r, j] += qv[b, v, i0] * (inv_l2 - w1) + qv[b, v, i0 + 1] * w1
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


def fbp(geom: FanBeamGeometry, sino: torch.Tensor, filter_window: str = "hann", backend: str = "auto",
        cutoff: float = 1.0) -> torch.Tensor:
    """Line integrals (B, V, C) -> attenuation images (B, H, W) in 1/mm (back-projection `backend` as in
    `backproject`; the ramp apodised by `filter_window` up to `cutoff` of Nyquist)."""
    squeeze = sino.dim() == 2
    if squeeze:
        sino = sino[None]
    img = backproject(geom, filter_sinogram(geom, sino, filter_window, cutoff=cutoff), backend)
    return img[0] if squeeze else img
