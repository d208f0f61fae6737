"""Patient support: the couch and its pad under a trunk, the head holder and its cushion under a head.

Real scans show them, and a denoiser that never met a thin, bright, curved shell outside the body smooths it. Before
the phantoms had them, RED-CNN and DnCNN gained inside the patient of real heads and lost 1.4-5.3 dB outside it
(results/transfer/after-realistic/real.md). On Debian's Cranium.inv3 (0.96 mm) the pixels outside the head above
-950 HU (its cradle and cushions) lie at -825, -692 and -603 HU at their quartiles and +409 HU at their 95th
percentile: foam cushions around -700 and a shell whose few-millimetre thickness partial volume holds below its
material's value. The values below are our choice within those ranges:

- head: a foam cushion (-900..-650 HU, 10-25 mm) under the occiput and a cradle of carbon fibre or plastic (+300..+600
  HU, 2.5-4.5 mm) around it, its arms reaching past the ears;
- chest and abdomen: a foam pad (-950..-800 HU, 8-30 mm) on a couch top curved to a 0.5-1.5 m radius, 400-480 mm wide:
  a sandwich of two carbon-fibre skins (+200..+500 HU, 1-2 mm) round a foam core (-980..-900 HU, 25-45 mm).

The hardware is fixed to the table: the same at every slice of a patient (so one sinogram serves them all), sized to
the patient's widest slice, 3 mm clear of it and not turned with the patient's tilt. Each layer is a curved band tiled
by convex quadrilaterals that share their edges, so its line integrals are exact (the chord of a line through a convex
polygon) and are added to the ellipses' before the photons are counted: the hardware attenuates, and adds its noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch

from .geometry import FanBeamGeometry, ray_lines
from .phantoms import outline, patient_shape
from .projector import hu_to_mu

GAP_MM = 3.0  # between the patient's widest outline and the nearest hardware
_SEGMENTS = 24  # quadrilaterals a band


@dataclass(frozen=True)
class Support:
    """Convex quadrilaterals, (P, 4, 2) vertices in mm counter-clockwise, and each one's HU (P,)."""

    quads: np.ndarray
    hu: np.ndarray

    def half_planes(self) -> tuple[np.ndarray, np.ndarray]:
        """Each edge as {p : n . p <= h}: outward unit normals (P, 4, 2) and offsets h (P, 4)."""
        edge = np.roll(self.quads, -1, axis=1) - self.quads
        normal = np.stack((edge[..., 1], -edge[..., 0]), axis=-1)  # outward for counter-clockwise vertices
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
        return normal, (normal * self.quads).sum(-1)

    def covers(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each point (x, y in mm, any equal shapes) lies in the hardware."""
        normal, offset = self.half_planes()
        lo, hi = self.quads.min(axis=(0, 1)), self.quads.max(axis=(0, 1))
        near = np.flatnonzero((x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]))  # the hardware's box
        px, py = np.ravel(x)[near], np.ravel(y)[near]
        hit = np.zeros(near.size, dtype=bool)
        for n, h, q in zip(normal, offset, self.quads):
            box = np.flatnonzero((px >= q[:, 0].min()) & (px <= q[:, 0].max()) & (py >= q[:, 1].min())
                                 & (py <= q[:, 1].max()))
            hit[box] |= np.all(n[:, 0, None] * px[box] + n[:, 1, None] * py[box] <= h[:, None], axis=0)
        out = np.zeros(np.size(x), dtype=bool)
        out[near] = hit
        return out.reshape(np.shape(x))


def patient_support(anatomy: str, seed: int, layered_scalp: bool = False) -> Support:
    """The hardware under patient `seed` of `anatomy` (the same seed and scalp as phantoms.phantom_slice's)."""
    r = np.random.default_rng([seed, 11])
    a, b = outline(anatomy, seed, layered_scalp)
    clear = GAP_MM + _tilt_clearance(a, b, patient_shape(seed)[3])
    bands = []
    if anatomy == "head":  # cushion and cradle round the scalp
        cushion, shell = r.uniform(10, 25), r.uniform(2.5, 4.5)
        a, b = a + clear, b + clear
        bands.append((0.0, 0.0, a, b, cushion, r.uniform(45, 70), r.uniform(-900, -650)))
        bands.append((0.0, 0.0, a + cushion, b + cushion, shell, r.uniform(60, 100), r.uniform(300, 600)))
    else:  # a couch top curved to a radius, its lowest point under the body's
        radius, half_width = r.uniform(500, 1500), r.uniform(200, 240)
        half_angle = math.degrees(math.asin(half_width / radius))
        top = -b - clear
        layers = [(r.uniform(8, 30), r.uniform(-950, -800)), (r.uniform(1, 2), r.uniform(200, 500)),
                  (r.uniform(25, 45), r.uniform(-980, -900)), (r.uniform(1, 2), r.uniform(200, 500))]
        inner = radius
        for thickness, hu in layers:
            bands.append((0.0, top + radius, inner, inner, thickness, half_angle, hu))
            inner += thickness
    quads, hus = zip(*(_band(*band) for band in bands))
    return Support(np.concatenate(quads), np.concatenate(hus))


def _tilt_clearance(a: float, b: float, degrees: float) -> float:
    """How far (mm) the ellipse (a, b) turned by `degrees` reaches beyond itself unturned, measured as the growth of
    both semi-axes that takes it in again (an elongated head tilted 5 degrees bulges by up to ~4 mm)."""
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    x, y = a * np.cos(t), b * np.sin(t)
    x, y = c * x - s * y, s * x + c * y
    lo, hi = 0.0, max(a, b)
    for _ in range(40):  # bisection: the least growth g with every turned point inside (a + g, b + g)
        g = (lo + hi) / 2
        lo, hi = (g, hi) if np.any((x / (a + g)) ** 2 + (y / (b + g)) ** 2 > 1.0) else (lo, g)
    return hi


def _band(cx, cy, a, b, thickness, half_angle_deg, hu) -> tuple[np.ndarray, np.ndarray]:
    """The band between the ellipses (a, b) and (a + thickness, b + thickness) about (cx, cy), over half_angle_deg
    either side of straight down, as _SEGMENTS quadrilaterals."""
    t = np.radians(-90 + np.linspace(-half_angle_deg, half_angle_deg, _SEGMENTS + 1))
    inner = np.stack((cx + a * np.cos(t), cy + b * np.sin(t)), -1)
    outer = np.stack((cx + (a + thickness) * np.cos(t), cy + (b + thickness) * np.sin(t)), -1)
    quads = np.stack((outer[:-1], outer[1:], inner[1:], inner[:-1]), 1)  # counter-clockwise (angle rises)
    return quads, np.full(_SEGMENTS, float(hu))


def support_sinogram(geom: FanBeamGeometry, support: Support) -> torch.Tensor:
    """Exact line integrals (n_views, n_channels) of the hardware, for every ray of `geom` (float64)."""
    cos_t, sin_t, t = ray_lines(geom)
    normal, offset = support.half_planes()
    centre = support.quads.mean(axis=1)
    radius = np.linalg.norm(support.quads - centre[:, None], axis=-1).max(axis=1)
    mu = hu_to_mu(torch.from_numpy(support.hu)).numpy()
    return torch.from_numpy(_chords(cos_t.numpy(), sin_t.numpy(), t.numpy(), np.ascontiguousarray(normal),
                                    np.ascontiguousarray(offset), centre, radius, mu))


@numba.njit(parallel=True, cache=True)
def _chords(cos_t, sin_t, t, normal, offset, centre, radius, mu):
    """Sum over polygons of mu times the length of each ray inside it: the ray {p : p . n = t} is p = t n + s u with
    u = (-sin, cos); each edge bounds s from one side, and what is left of the interval is the chord."""
    n_v, n_c = t.shape
    out = np.zeros((n_v, n_c))
    for v in numba.prange(n_v):
        for c in range(n_c):
            ct, st, tt = cos_t[v, c], sin_t[v, c], t[v, c]
            total = 0.0
            for k in range(mu.size):
                if abs(tt - (ct * centre[k, 0] + st * centre[k, 1])) >= radius[k]:
                    continue  # the ray misses the polygon's bounding circle
                lo, hi = -1e30, 1e30
                for e in range(normal.shape[1]):
                    nx, ny = normal[k, e, 0], normal[k, e, 1]
                    along = ny * ct - nx * st  # n . u
                    room = offset[k, e] - tt * (nx * ct + ny * st)  # h - n . (t n_ray)
                    if abs(along) < 1e-12:
                        if room < 0.0:
                            hi = lo - 1.0
                    elif along > 0.0:
                        hi = min(hi, room / along)
                    else:
                        lo = max(lo, room / along)
                if hi > lo:
                    total += (hi - lo) * mu[k]
            out[v, c] = total
    return out
