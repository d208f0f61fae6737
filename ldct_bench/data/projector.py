"""Forward projection: exact line integrals of ellipses, and a ray-driven projector for images.

Phantoms are sums of ellipses, so their sinograms are computed analytically (chord
length times attenuation) rather than with a discretised projector: reconstructing
with FBP from an analytic sinogram avoids the "inverse crime". Real images (DICOM)
have no analytic form and are reprojected with the ray-driven projector below.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import FanBeamGeometry, ray_lines

try:  # numba is the fast CPU projector, as it is the fast back-projector (fbp.py)
    import numba
except ImportError:  # pragma: no cover - numba is a declared dependency
    numba = None

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV effective energy, 1/mm


def hu_to_mu(hu: torch.Tensor) -> torch.Tensor:
    return MU_WATER_PER_MM * (1.0 + hu / 1000.0)


def mu_to_hu(mu: torch.Tensor) -> torch.Tensor:
    return 1000.0 * (mu - MU_WATER_PER_MM) / MU_WATER_PER_MM


def ellipse_sinogram(
    geom: FanBeamGeometry, ellipses: torch.Tensor, views_per_chunk: int = 4, backend: str = "auto"
) -> torch.Tensor:
    """Exact line integrals of a sum of ellipses for every ray of `geom`.

    ellipses: (E, 6) rows of (cx, cy, a, b, phi, mu) in mm, mm, mm, mm, rad, 1/mm;
    mu is *added* where ellipses overlap (as in Shepp-Logan/FORBILD).
    Returns (n_views, n_channels) float64 line integrals (dimensionless).
    backend: "numba" (CPU: views in parallel, a view's rays vectorised), "torch", or "auto" (numba).
    """
    e = ellipses.to(torch.float64)
    cx, cy, a, b, phi, mu = (e[:, i] for i in range(6))
    cos_p, sin_p = torch.cos(phi), torch.sin(phi)
    cos_t, sin_t, t = ray_lines(geom)
    if backend == "auto":
        backend = "numba" if numba is not None else "torch"
    if backend == "numba":
        params = torch.stack((cx, cy, a, b, cos_p, sin_p, mu), 1).numpy()
        return torch.from_numpy(_ellipse_kernel()(cos_t.numpy(), sin_t.numpy(), t.numpy(), params))
    if backend != "torch":
        raise ValueError(f"projector: unknown backend {backend!r}; use auto, numba or torch.")
    out = torch.empty(geom.n_views, geom.n_channels, dtype=torch.float64)
    for v0 in range(0, geom.n_views, views_per_chunk):
        sl = slice(v0, v0 + views_per_chunk)
        ct, st, tt = (z[sl, :, None] for z in (cos_t, sin_t, t))
        # distance of each line from each ellipse centre, and the ellipse's "radius" along the normal
        d = tt - (ct * cx + st * cy)
        c_rel = ct * cos_p + st * sin_p
        s_rel = st * cos_p - ct * sin_p
        r2 = (a * c_rel) ** 2 + (b * s_rel) ** 2
        chord = 2 * a * b * torch.sqrt(torch.clamp(r2 - d * d, min=0.0)) / r2
        out[sl] = (chord * mu).sum(-1)
    return out


@lru_cache(maxsize=1)
def _ellipse_kernel():
    """The torch version's arithmetic, operation for operation (no fast-math), summed over ellipses in order. A view's
    rays meet one ellipse at a time: a branch-free pass over them (it vectorises) finds the channels whose rays cross
    it, and only those take the square root and division of a chord."""

    @numba.njit(parallel=True, cache=True)
    def kernel(cos_t, sin_t, t, params):
        n_v, n_c = t.shape
        out = np.zeros((n_v, n_c), dtype=np.float64)
        for v in numba.prange(n_v):
            ct, st, tt, total = cos_t[v], sin_t[v], t[v], out[v]
            r2s, rems = np.empty(n_c), np.empty(n_c)
            for k in range(params.shape[0]):
                cx, cy, a, b, cos_p, sin_p, mu = params[k]
                first, last = n_c, -1
                for c in range(n_c):
                    d = tt[c] - (ct[c] * cx + st[c] * cy)
                    c_rel = ct[c] * cos_p + st[c] * sin_p
                    s_rel = st[c] * cos_p - ct[c] * sin_p
                    r2 = (a * c_rel) ** 2 + (b * s_rel) ** 2
                    rem = r2 - d * d
                    r2s[c], rems[c] = r2, rem
                    if rem > 0.0:  # the ray crosses this ellipse
                        first, last = min(first, c), max(last, c)
                for c in range(first, last + 1):
                    if rems[c] > 0.0:
                        total[c] += (2 * a * b * math.sqrt(rems[c]) / r2s[c]) * mu
        return out

    return kernel


def project_image(geom: FanBeamGeometry, mu: torch.Tensor, step_fraction: float = 0.5,
                  views_per_chunk: int = 32, backend: str = "auto") -> torch.Tensor:
    """Ray-driven forward projection of attenuation images (B, H, W) [1/mm] -> (B, V, C).

    Each ray is sampled every `step_fraction` pixels with bilinear interpolation;
    outside the image the object is zero. backend: "numba" (CPU: only the samples that fall on the image are
    visited), "torch" (any device: every sample of every ray, through grid_sample), or "auto".
    """
    if mu.dim() == 2:
        mu = mu[None]
    if backend == "auto":
        backend = "numba" if (numba is not None and mu.device.type == "cpu") else "torch"
    if backend == "numba":
        return _project_numba(geom, mu, step_fraction)
    if backend != "torch":
        raise ValueError(f"projector: unknown backend {backend!r}; use auto, numba or torch.")
    bsz = mu.shape[0]
    dev, dt = mu.device, mu.dtype
    half = geom.fov_mm / 2
    beta = geom.view_angles().to(dev)
    gamma = geom.channel_angles().to(dev)
    ds = geom.pixel_mm * step_fraction
    r = geom.fov_radius_mm
    s = torch.arange(geom.source_iso_mm - r, geom.source_iso_mm + r + ds, ds, device=dev, dtype=torch.float64)
    img = mu[:, None]
    out = torch.empty(bsz, geom.n_views, geom.n_channels, device=dev, dtype=dt)
    for v0 in range(0, geom.n_views, views_per_chunk):
        b = beta[v0:v0 + views_per_chunk]
        ang = b[:, None] + gamma[None, :]
        sx, sy = geom.source_iso_mm * torch.cos(b), geom.source_iso_mm * torch.sin(b)
        px = sx[:, None, None] - torch.cos(ang)[..., None] * s  # (v, c, s)
        py = sy[:, None, None] - torch.sin(ang)[..., None] * s
        grid = torch.stack((px / half, -py / half), dim=-1)
        # align_corners=False maps [-1, 1] to the outer pixel edges, which is our FOV
        grid = grid.reshape(1, -1, s.numel(), 2).to(dt).expand(bsz, -1, -1, -1)
        vals = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out[:, v0:v0 + len(b)] = (vals.sum(-1) * ds).reshape(bsz, len(b), geom.n_channels)
    return out


def _project_numba(geom: FanBeamGeometry, mu: torch.Tensor, step_fraction: float) -> torch.Tensor:
    """The torch projector's samples (the same positions along each ray, the same bilinear weights with zeros
    outside), visiting only those within a pixel of the image: views in parallel, no temporaries."""
    ds = geom.pixel_mm * step_fraction
    beta, gamma = geom.view_angles().numpy(), geom.channel_angles().numpy()
    img = np.ascontiguousarray(mu.detach().to(torch.float32).numpy())
    out = _project_kernel()(img, beta, gamma, geom.source_iso_mm, geom.fov_mm / 2, geom.pixel_mm,
                            geom.source_iso_mm - geom.fov_radius_mm, ds)
    return torch.from_numpy(out).to(mu.dtype)


@lru_cache(maxsize=1)
def _project_kernel():
    @numba.njit(parallel=True, fastmath=True, cache=True)
    def kernel(img, beta, gamma, dist, half, pixel, s0, ds):
        n_b, n_r, n_x = img.shape
        n_v, n_c = beta.shape[0], gamma.shape[0]
        out = np.zeros((n_b, n_v, n_c), dtype=np.float64)
        edge = half + pixel  # a sample within a pixel of the image still takes a share of its border pixels
        for v in numba.prange(n_v):
            sx, sy = dist * math.cos(beta[v]), dist * math.sin(beta[v])
            acc = np.zeros(n_b, dtype=np.float64)
            for c in range(n_c):
                dx, dy = -math.cos(beta[v] + gamma[c]), -math.sin(beta[v] + gamma[c])
                lo, hi = -1e30, 1e30  # the stretch of the ray inside the square |x|, |y| <= edge (slab method)
                for o, d in ((sx, dx), (sy, dy)):
                    if abs(d) < 1e-12:
                        if abs(o) > edge:
                            lo, hi = 1.0, 0.0
                    else:
                        t1, t2 = (-edge - o) / d, (edge - o) / d
                        lo, hi = max(lo, min(t1, t2)), min(hi, max(t1, t2))
                if hi < lo:
                    continue
                k0 = max(0, int(math.ceil((lo - s0) / ds)))
                k1 = int(math.floor((hi - s0) / ds))
                acc[:] = 0.0
                for k in range(k0, k1 + 1):
                    s = s0 + k * ds
                    col = (sx + dx * s + half) / pixel - 0.5
                    row = (half - (sy + dy * s)) / pixel - 0.5
                    c0, r0 = math.floor(col), math.floor(row)
                    fc, fr = col - c0, row - r0
                    i, j = int(r0), int(c0)
                    for di in range(2):
                        ii = i + di
                        if ii < 0 or ii >= n_r:
                            continue
                        wr = fr if di else 1.0 - fr
                        for dj in range(2):
                            jj = j + dj
                            if jj < 0 or jj >= n_x:
                                continue
                            w = wr * (fc if dj else 1.0 - fc)
                            for b in range(n_b):
                                acc[b] += w * img[b, ii, jj]
                for b in range(n_b):
                    out[b, v, c] = acc[b] * ds
        return out

    return kernel
