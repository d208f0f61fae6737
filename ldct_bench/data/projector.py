"""Forward projection: exact line integrals of ellipses, and a ray-driven projector for images.

Phantoms are sums of ellipses, so their sinograms are computed analytically (chord
length times attenuation) rather than with a discretised projector: reconstructing
with FBP from an analytic sinogram avoids the "inverse crime". Real images (DICOM)
have no analytic form and are reprojected with the ray-driven projector below.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import FanBeamGeometry, ray_lines

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV effective energy, 1/mm


def hu_to_mu(hu: torch.Tensor) -> torch.Tensor:
    return MU_WATER_PER_MM * (1.0 + hu / 1000.0)


def mu_to_hu(mu: torch.Tensor) -> torch.Tensor:
    return 1000.0 * (mu - MU_WATER_PER_MM) / MU_WATER_PER_MM


def ellipse_sinogram(
    geom: FanBeamGeometry, ellipses: torch.Tensor, views_per_chunk: int = 4
) -> torch.Tensor:
    """Exact line integrals of a sum of ellipses for every ray of `geom`.

    ellipses: (E, 6) rows of (cx, cy, a, b, phi, mu) in mm, mm, mm, mm, rad, 1/mm;
    mu is *added* where ellipses overlap (as in Shepp-Logan/FORBILD).
    Returns (n_views, n_channels) float64 line integrals (dimensionless).
    """
    e = ellipses.to(torch.float64)
    cx, cy, a, b, phi, mu = (e[:, i] for i in range(6))
    cos_p, sin_p = torch.cos(phi), torch.sin(phi)
    cos_t, sin_t, t = ray_lines(geom)
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


def project_image(geom: FanBeamGeometry, mu: torch.Tensor, step_fraction: float = 0.5,
                  views_per_chunk: int = 32) -> torch.Tensor:
    """Ray-driven forward projection of attenuation images (B, H, W) [1/mm] -> (B, V, C).

    Each ray is sampled every `step_fraction` pixels with bilinear interpolation;
    outside the image the object is zero.
    """
    if mu.dim() == 2:
        mu = mu[None]
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
