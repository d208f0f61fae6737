"""Anatomy that ellipses cannot draw, as an image of HU increments: outlines that are not ellipses (gyri among
them), parenchymal texture with a power-law spectrum, cortical sulci, trabecular bone, the lung's vessel and airway
trees with their fissures, fat between muscle fibres, bowel content and calcifications
(PhantomConfig.anatomy_model = "realistic").

Every structure is a function of position in millimetres and of the patient's seed, so each acquisition profile
(another pixel grid, another display field) sees the same anatomy and adjacent slices are neighbours (the z axis is
Z_MM millimetres per phantom unit: the 0.08 between slices is 4.8 mm). The layer is averaged over each pixel (2 x 2
samples), blurred by the simulator's own transfer function (`system_blur`: the TTF of a rod's edge through its
scanner and kernel, so a sharp kernel shows the detail sharper) and added to the truth and to every scan.

Where the image domain is exact and where not: FBP is linear, so adding the blurred detail equals reconstructing the
detail's line integrals wherever the fan-beam response is shift-invariant and isotropic (near the isocentre; it
widens a little towards the edge of the field); the noise is not: the photons are counted through the ellipses alone, so the
detail does not change the quantum noise. Its attenuation is small beside the body's (texture has zero mean, the
trabecular network keeps the cancellous mean, the largest vessel adds under 1 % of a ray's line integral).

Sources for the numbers: power-law anatomical noise, P(f) ~ f^-beta, with beta = 1.7-2.0 in tomographic slices
(Metheany et al., Med. Phys. 35:4685, 2008, breast CT; Chen, Abbey & Boone, Phys. Med. Biol. 58:1663, 2013) against
~3 in projections; BETA = 2 here. Trabecular bone: spacing 0.6-1.2 mm, bone volume fraction 0.15-0.3
(Hildebrand et al., J. Bone Miner. Res. 14:1167, 1999). Pulmonary vessels: Murray's law r_parent^3 = sum r_child^3
(child/parent = 2^-1/3 for a symmetric split) from the segmental vessels' 2-3 mm radius, airway wall thickness
~0.15 of the lumen diameter (Weibel, Morphometry of the Human Lung, 1963); fissures ~0.5 mm visceral pleura.
"""

from __future__ import annotations

import functools
import json
import math

import numba
import numpy as np
import torch

from .phantoms import TISSUE_HU, Ellipse

BETA = 2.0  # exponent of the parenchymal texture's power spectrum (see the module docstring)
Z_MM = 60.0  # millimetres per phantom z unit
SUPERSAMPLE = 2  # detail samples per pixel along each axis
SLAB_MM = 2.0  # the reconstructed slice's thickness, over which the finest structure (trabeculae) is averaged
_GRID_MM, _GRID_N = 0.8, 512  # the texture fields' fixed physical grid (410 mm square)
# texture standard deviation (HU) of each tissue: parenchyma and bone most, fluid least (our choice, no measured
# source; scripts/realism.py reports where it puts the phantoms' soft-tissue spread against real CT)
TEXTURE_HU = {"fat": 6.0, "muscle": 7.0, "liver": 9.0, "spleen": 7.0, "kidney": 10.0, "bowel": 25.0, "blood": 3.0,
              "grey_matter": 4.0, "white_matter": 3.0, "csf": 1.5, "water": 1.5, "lung": 30.0, "rib": 40.0,
              "cortical_bone": 40.0, "diploe": 80.0}
_DEFORMED = {"fat", "muscle", "liver", "spleen", "kidney", "lung", "blood", "grey_matter", "white_matter", "bowel",
             "cortical_bone", "cancellous_bone", "csf", "diploe"}
_MARROW_HU, _TRABECULA_HU, _BONE_FRACTION = 40.0, 950.0, 0.24


def detail_layer(anatomy: str, seed: int, z: float, items: list[Ellipse], sim, support=None) -> np.ndarray:
    """The (H, W) HU increments of one slice's detail on `sim`'s grid, blurred as `sim` would (system_blur). Where
    the patient's `support` (data/support.py) lies, nothing is added: a body outline pushed out meets the cushion
    and stops there, as soft tissue does."""
    xs = fine_grid(sim.geometry)  # sample columns; rows at y = -xs
    x, y = np.meshgrid(xs, -xs)
    owner = owner_map(items, xs)
    tissue = np.array([e.tissue for e in items] + ["air"])[owner]  # owner -1 (air) reads the last entry
    layer = np.zeros_like(x)
    layer += _outlines(items, owner, x, y, seed, z)
    layer += _texture(tissue, x, y, seed, z)
    layer += _trabecular(tissue, x, y, seed, z)
    if anatomy == "head":
        layer += _sulci(items, tissue, x, y, seed, z)
    else:  # (the scalp is muscle too, without fat in it)
        layer += _inclusions(tissue, x, y, seed + 1, z, "muscle", "fat", 0.6, 5.0)
    layer += _inclusions(tissue, x, y, seed + 2, z, "bowel", "air", 2.5, 9.0)
    if anatomy == "chest":
        layer += _lung(items, tissue, xs, x, y, seed, z)
    layer += _calcifications(anatomy, items, xs, seed, z)
    if support is not None:
        layer[support.covers(x, y)] = 0.0
    n = sim.geometry.image_size
    return system_blur(sim, layer.reshape(n, SUPERSAMPLE, n, SUPERSAMPLE).mean(axis=(1, 3)))


@functools.lru_cache(maxsize=16)
def _transfer(simulator_json: str) -> tuple[np.ndarray, np.ndarray]:
    from ..metrics.task import ttf_circular_edge
    from .projector import ellipse_sinogram, hu_to_mu
    from .simulate import Simulator

    sim = Simulator.from_dict(json.loads(simulator_json))
    g = sim.geometry
    radius = 0.1 * g.fov_mm  # a water rod in air: its edge, at every angle and sub-pixel position
    rows = torch.tensor([[0.0, 0.0, radius, radius, 0.0, hu_to_mu(torch.tensor(0.0)).item()]], dtype=torch.float64)
    img = sim.reconstruct(ellipse_sinogram(g, rows)[None].float())[0].double().numpy()
    centre = (g.image_size - 1) / 2
    t = ttf_circular_edge(img, centre, centre, radius / g.pixel_mm, g.pixel_mm)
    return t.frequency, t.ttf


def fine_grid(geom) -> np.ndarray:
    """Where the detail is sampled along x (and, negated, along y: row 0 on top), in mm: 2 x 2 points per pixel, whose
    mean is the pixel's partial-volume average."""
    n = geom.image_size
    off = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    return ((np.arange(n) - (n - 1) / 2)[:, None] + off[None]).reshape(-1) * geom.pixel_mm


def system_blur(sim, image: np.ndarray) -> np.ndarray:
    """`image` (H, W) of pixel-area averages on `sim`'s grid -> what `sim` reconstructs of the object they average:
    multiplied, in frequency, by the scanner's and kernel's transfer function (the TTF of a water rod's edge by the
    circular-edge method: the average over sub-pixel positions that a single point would alias) over the pixel
    box's (FBP evaluates its image at the pixel centres; it does not average over the pixel). What a pixel grid cannot
    hold, it cannot give: an edge's aliasing, which a sharp kernel shows, is averaged out."""
    freq, ttf = _transfer(json.dumps(sim.to_dict(), sort_keys=True))
    n, d = image.shape[0], sim.geometry.pixel_mm
    f = np.fft.fftfreq(2 * n, d=d)
    spectrum = np.fft.rfft2(image, s=(2 * n, 2 * n))  # zero-padded: no wrap-around
    box = np.abs(np.sinc(f[:, None] * d) * np.sinc(f[None, : n + 1] * d))
    h = np.interp(np.hypot(f[:, None], f[None, : n + 1]), freq, ttf, right=0.0) / box
    return np.fft.irfft2(spectrum * h, s=(2 * n, 2 * n))[:n, :n].astype(np.float32)


# ------------------------------------------------------------------------------------------ the ellipses' owners
def owner_map(items: list[Ellipse], xs: np.ndarray) -> np.ndarray:
    """(len(xs), len(xs)) index of the last-painted ellipse containing each sample (row r at y = -xs[r]); -1: air."""
    params = np.array([(e.cx, e.cy, e.a, e.b, math.cos(math.radians(e.phi_deg)), math.sin(math.radians(e.phi_deg)))
                       for e in items], dtype=np.float64).reshape(-1, 6)
    return _owners(np.ascontiguousarray(xs, dtype=np.float64), params)


@numba.njit(cache=True)
def _owners(xs, params):
    n = xs.size
    out = np.full((n, n), -1, dtype=np.int64)
    step = xs[1] - xs[0] if n > 1 else 1.0
    for k in range(params.shape[0]):
        cx, cy, a, b, cp, sp = params[k]
        hx, hy = math.hypot(a * cp, b * sp) + step, math.hypot(a * sp, b * cp) + step
        c0 = max(0, int((cx - hx - xs[0]) / step))
        c1 = min(n, int((cx + hx - xs[0]) / step) + 2)
        r0 = max(0, int((-(cy + hy) - xs[0]) / step))
        r1 = min(n, int((-(cy - hy) - xs[0]) / step) + 2)
        for r in range(r0, r1):
            y = -xs[r]
            for c in range(c0, c1):
                dx, dy = xs[c] - cx, y - cy
                ua, vb = (dx * cp + dy * sp) / a, (-dx * sp + dy * cp) / b
                if ua * ua + vb * vb <= 1.0:
                    out[r, c] = k
    return out


def _parent(items: list[Ellipse], k: int) -> int:
    """The ellipse painted under ellipse k's centre (-1: air), as phantoms.to_additive reads it."""
    e = items[k]
    return max((j for j in range(k) if items[j].contains(e.cx, e.cy)), default=-1)


def _rng(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng([seed, 97, *keys])


# ------------------------------------------------------------------------------------------------- the parts
def _outlines(items, owner, x, y, seed, z) -> np.ndarray:
    """Each organ's boundary pushed in and out by a few smooth lobes (harmonics 2-7 of its angle, up to 4 % of its
    radius, drifting with z): where the organ now covers its parent it adds its value over the parent's, where it
    withdraws it gives the parent's back. Only pixels the organ or its parent own change, so what is painted over
    either keeps its value. Ellipses with one centre (the body wall's layers, the skull's) share their lobes, so
    the layers stay nested."""
    out = np.zeros_like(x)
    for k, e in enumerate(items):
        if e.tissue not in _DEFORMED or min(e.a, e.b) < 8.0:
            continue
        r = _rng(seed, 1, round(e.cx) + 1000, round(e.cy) + 1000)
        m = np.arange(2, 8)
        amp = r.uniform(0.4, 1.0, m.size) * 0.04 / (m / 2.0) ** 1.2
        if e.tissue == "white_matter":  # gyri: white matter reaching a few mm into the cortex, 10-20 lobes a turn
            m = np.r_[m, np.arange(10, 21)]
            amp = np.r_[amp, r.uniform(0.0, 1.0, 11) * 1.2 / min(e.a, e.b)]
        phase, drift = r.uniform(0, 2 * np.pi, m.size), r.normal(0, 1.5, m.size)
        p = _parent(items, k)
        hu_below = items[p].hu if p >= 0 else TISSUE_HU["air"]
        box = (np.abs(x - e.cx) < 1.4 * max(e.a, e.b)) & (np.abs(y - e.cy) < 1.4 * max(e.a, e.b))
        xb, yb, ob = x[box], y[box], owner[box]
        c, s = math.cos(math.radians(e.phi_deg)), math.sin(math.radians(e.phi_deg))
        u, v = ((xb - e.cx) * c + (yb - e.cy) * s) / e.a, (-(xb - e.cx) * s + (yb - e.cy) * c) / e.b
        rho = np.hypot(u, v)
        # only where the lobes can reach (|edge - 1| <= sum of amplitudes) or the organ owns a pixel can anything
        # change: the lobes are evaluated there alone (a fifth of the box or less; the same values)
        reach = float(np.abs(amp).sum())
        near = np.flatnonzero((rho >= 1.0 - reach) & ((rho <= 1.0 + reach) | (ob == k)))
        rho, ob = rho[near], ob[near]
        theta = np.arctan2(v[near], u[near])
        edge = 1.0 + (amp[:, None] * np.cos(m[:, None] * theta + phase[:, None] + drift[:, None] * z)).sum(0)
        inside = rho <= edge
        delta = np.zeros_like(rho)
        delta[(ob == p) & inside & (rho > 1.0)] = e.hu - hu_below
        delta[(ob == k) & ~inside] = hu_below - e.hu
        changed = np.zeros_like(xb)
        changed[near] = delta
        out[box] += changed
    return out


@functools.lru_cache(maxsize=8)
def _fields(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent unit-variance Gaussian fields with P(f) ~ (f^2 + f0^2)^(-BETA/2) on the fixed grid."""
    r = _rng(seed, 2)
    f = np.fft.fftfreq(_GRID_N, d=_GRID_MM)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    amp = (f2 + (1 / 60.0) ** 2) ** (-BETA / 4)  # f0: structures wider than 60 mm are the organs themselves
    out = []
    for _ in range(2):
        white = np.fft.fft2(r.standard_normal((_GRID_N, _GRID_N)))
        field = np.fft.ifft2(white * amp).real
        out.append((field / field.std()).astype(np.float32))
    return out[0], out[1]


def _sample(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of a fixed-grid field at (x, y) mm (periodic)."""
    from scipy.ndimage import map_coordinates

    half = _GRID_N * _GRID_MM / 2
    return map_coordinates(field, [(half - y) / _GRID_MM, (x + half) / _GRID_MM], order=1, mode="grid-wrap")


def _texture_at(seed, x, y, z, key: float) -> np.ndarray:
    """The patient's texture at slice z: two fields mixed by an angle turning with z, so neighbouring slices
    correlate (0.94 at 4.8 mm) and each `key` (a tissue) has its own pattern."""
    a, b = _fields(seed)
    angle = 3.0 * z + key
    shift = 37.0 * key  # mm: a tissue's own stretch of the field
    return math.cos(angle) * _sample(a, x + shift, y) + math.sin(angle) * _sample(b, x, y - shift)


def _texture(tissue, x, y, seed, z) -> np.ndarray:
    out = np.zeros_like(x)
    for i, (name, sd) in enumerate(TEXTURE_HU.items()):
        where = tissue == name
        if where.any():
            out[where] = sd * _texture_at(seed, x[where], y[where], z, 0.7 * i)
    return out


def _trabecular(tissue, x, y, seed, z) -> np.ndarray:
    """Cancellous bone as a network of trabeculae: a sum of random plane waves (wavelength 1.2-2 mm, any direction
    in 3-D) thresholded at the bone volume fraction, marrow between, averaged through the slice's SLAB_MM (a plane
    through the network would show it at a contrast no reconstructed slice has). The region's mean stays near its
    HU."""
    where = tissue == "cancellous_bone"
    out = np.zeros_like(x)
    if not where.any():
        return out
    r = _rng(seed, 3)
    k = r.normal(size=(24, 3))
    k *= (2 * np.pi / r.uniform(1.2, 2.0, 24) / np.linalg.norm(k, axis=1))[:, None]
    phase = r.uniform(0, 2 * np.pi, 24)
    fraction = np.zeros(where.sum())
    for dz in SLAB_MM * (np.arange(4) + 0.5 - 2) / 4:  # the slice's thickness averages the network along z
        pts = np.stack([x[where], y[where], np.full(where.sum(), z * Z_MM + dz)], axis=1)
        wave = np.cos(pts @ k.T + phase).sum(1) / math.sqrt(12)
        fraction += (np.abs(wave) < _quantile_abs(_BONE_FRACTION)) / 4  # sheets where the sum crosses zero
    out[where] = _MARROW_HU + fraction * (_TRABECULA_HU - _MARROW_HU) - TISSUE_HU["cancellous_bone"]
    return out


def _quantile_abs(fraction: float) -> float:
    """t with P(|N(0,1)| < t) = fraction."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + fraction / 2))


def _sulci(items, tissue, x, y, seed, z) -> np.ndarray:
    """The cortex's sulci: CSF clefts 1.2 mm wide winding from the brain's surface 6-18 mm inward, some 40 a turn
    drifting with z; in grey matter only."""
    brain = [e for e in items if e.tissue == "grey_matter" and min(e.a, e.b) > 40]
    where = tissue == "grey_matter"
    out = np.zeros_like(x)
    if not brain or not where.any():
        return out
    e = brain[0]
    r = _rng(seed, 7)
    angles = np.sort(np.mod(r.uniform(0, 2 * np.pi, 40) + 0.3 * z, 2 * np.pi))
    depth, phase = r.uniform(6, 18, angles.size), r.uniform(0, 2 * np.pi, angles.size)
    xs, ys = x[where] - e.cx, y[where] - e.cy
    theta = np.mod(np.arctan2(ys, xs), 2 * np.pi)
    inward = (1 - np.hypot(xs / e.a, ys / e.b)) * min(e.a, e.b)  # mm below the brain's surface, roughly
    cleft = np.zeros(xs.shape, dtype=bool)
    nearest = np.searchsorted(angles, theta)
    for j in (nearest - 1, nearest % angles.size):  # the sulci on either side of each sample's angle
        radius = np.maximum(np.hypot(xs, ys), 1.0)
        wiggle = 1.0 * np.sin(2 * np.pi * inward / 20.0 + phase[j]) / radius  # a sulcus winds, 1 mm each way
        off = np.angle(np.exp(1j * (theta - angles[j] - wiggle)))
        cleft |= (np.abs(off) * radius < 0.6) & (inward < depth[j])
    out[where] = np.where(cleft, TISSUE_HU["csf"] - TISSUE_HU["grey_matter"], 0.0)
    return out


def _inclusions(tissue, x, y, seed, z, host: str, guest: str, scale: float, key: float) -> np.ndarray:
    """Patches of `guest` inside `host`: where the patient's texture, stretched `scale` times finer, is in its top
    6 %. Fat between muscle bundles (intramuscular fat is a few per cent of a healthy adult's muscle; scale 0.6) and
    gas bubbles in bowel content (scale 2.5)."""
    where = tissue == host
    out = np.zeros_like(x)
    if where.any():
        field = _texture_at(seed, scale * x[where], scale * y[where], z, key)
        out[where] = np.where(field > 1.55, TISSUE_HU[guest] - TISSUE_HU[host], 0.0)
    return out


# -------------------------------------------------------------------------------- the lung's trees and fissures
@functools.lru_cache(maxsize=8)
def _trees(seed: int, side: int) -> np.ndarray:
    """Segments (x1, y1, z1, x2, y2, z2, radius_mm, kind) of one lung's arteries (0), veins (0) and airways (1),
    endpoints in the lung's unit ball (x across, y front-back, z along the body), grown from the hilum by
    random splits (Murray's law), each child turned 20-45 degrees and leaning away from the hilum, until
    0.4 mm (airways: 1 mm) or the lung's edge."""
    r = _rng(seed, 4, side + 1)
    segments = []
    # ten bronchopulmonary segments, each with its artery, vein (2-3 mm) and bronchus (3 mm), from around the hilum
    roots = [(kind, (r.uniform(-0.8, -0.5), r.uniform(-0.35, 0.35), r.uniform(-0.6, 0.6)))
             for _ in range(10) for kind in (0, 0, 1)]
    for kind, start in roots:
        root = np.array(start, dtype=float) * min(1.0, 0.85 / np.linalg.norm(start))  # inside the lung
        heading = np.array([0.6, 1.5 * start[1], 1.5 * start[2]]) + r.normal(0, 0.2, 3)
        stack = [(root, heading, r.uniform(2.0, 3.0) if kind == 0 else 3.0)]
        while stack:
            p, d, rad = stack.pop()
            d = d / np.linalg.norm(d)
            length = rad * r.uniform(4.0, 7.0) / 110.0  # mm over the lung's ~110 mm semi-axis
            pd = float(p @ d)  # stop at the lung's edge: |p + t d| = 0.97
            q = p + d * min(length, max(0.0, -pd + math.sqrt(max(0.0, pd * pd - p @ p + 0.97**2))))
            segments.append((*p, *q, rad, kind))
            if rad < (0.4 if kind == 0 else 1.0) or np.linalg.norm(q) >= 0.96:
                continue
            normal = _cross(d, r.normal(size=3))
            normal /= np.linalg.norm(normal)
            share = r.uniform(0.35, 0.65)
            for f, sign in ((share, 1), (1 - share, -1)):
                child = rad * f ** (1 / 3)
                turn = math.radians(r.uniform(20, 45)) * sign
                away = (q - root) / max(1e-9, np.linalg.norm(q - root))  # trees fan out from the hilum
                stack.append((q, math.cos(turn) * d + math.sin(turn) * normal + 0.4 * away, child))
    out = np.array(segments, dtype=np.float64)
    out[:, [0, 3]] *= -side  # the hilum is medial: mirror the tree of each side
    return out


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """np.cross of two 3-vectors, the same products and differences without its per-call overhead (a third of the
    trees' time)."""
    a0, a1, a2 = a.tolist()
    b0, b1, b2 = b.tolist()
    return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])


def _lung(items, tissue, xs, x, y, seed, z) -> np.ndarray:
    """Vessels (blood in lung), airways (air inside a wall) and one oblique fissure per lung, inside lung only."""
    lungs = [e for e in items if e.tissue == "lung" and e.hu == TISSUE_HU["lung"]]
    where = tissue == "lung"
    out = np.zeros_like(x)
    if not where.any():
        return out
    vessel, lumen = np.zeros(x.shape, dtype=np.float64), np.zeros(x.shape, dtype=np.float64)
    for e in lungs:
        side = 1 if e.cx > 0 else -1
        seg = _trees(seed, side).copy()
        seg[:, [0, 3]] = e.cx + seg[:, [0, 3]] * e.a  # unit ball -> millimetres in this slice's lung
        seg[:, [1, 4]] = e.cy + seg[:, [1, 4]] * e.b
        seg[:, [2, 5]] *= 2.2 * Z_MM  # the lung is ~130 mm tall on either side of the hilum
        _paint_segments(xs, z * Z_MM, seg, vessel, lumen)
        # the major fissure: a plane leaning through the lung, a 0.5 mm line where this slice cuts it
        r = _rng(seed, 5, side + 1)
        angle, offset = r.uniform(0.6, 1.0) * side, r.uniform(-0.2, 0.2) * e.b + 0.5 * z * Z_MM
        dist = np.abs(np.cos(angle) * (y - e.cy - offset) - np.sin(angle) * (x - e.cx))
        out += np.where(dist < 0.25, 600.0, 0.0)
    out += np.where(vessel > 0, TISSUE_HU["blood"] - TISSUE_HU["lung"], 0.0)
    out = np.where(lumen > 0, TISSUE_HU["air"] - TISSUE_HU["lung"], out)
    return np.where(where, out, 0.0)


@numba.njit(cache=True)
def _paint_segments(xs, z0, seg, vessel, lumen):
    """Mark the samples of the plane z = z0 within a segment's radius (vessel) or, for an airway, within its lumen
    (lumen) and its wall of 0.15 lumen diameters (vessel); rows at y = -xs[r]."""
    n = xs.size
    step = xs[1] - xs[0]
    for i in range(seg.shape[0]):
        x1, y1, z1, x2, y2, z2, rad, kind = seg[i]
        outer = rad * (1.3 if kind == 1 else 1.0)
        if z0 < min(z1, z2) - outer or z0 > max(z1, z2) + outer:
            continue
        c0 = max(0, int((min(x1, x2) - outer - xs[0]) / step))
        c1 = min(n, int((max(x1, x2) + outer - xs[0]) / step) + 2)
        r0 = max(0, int((-max(y1, y2) - outer - xs[0]) / step))
        r1 = min(n, int((-min(y1, y2) + outer - xs[0]) / step) + 2)
        dx, dy, dz = x2 - x1, y2 - y1, z2 - z1
        ll = dx * dx + dy * dy + dz * dz
        for r in range(r0, r1):
            y = -xs[r]
            for c in range(c0, c1):
                px, py, pz = xs[c] - x1, y - y1, z0 - z1
                t = 0.0 if ll == 0 else min(1.0, max(0.0, (px * dx + py * dy + pz * dz) / ll))
                ex, ey, ez = px - t * dx, py - t * dy, pz - t * dz
                dist = math.sqrt(ex * ex + ey * ey + ez * ez)
                if dist <= outer:
                    vessel[r, c] = 1.0
                    if kind == 1 and dist <= rad:
                        lumen[r, c] = 1.0


def _calcifications(anatomy, items, xs, seed, z) -> np.ndarray:
    """A few dense dots (0.4-1.2 mm, +400-900 HU) where they occur: the aortic wall (abdomen, chest), the pineal
    gland and choroid plexus (head); each lasts a few millimetres along z."""
    r = _rng(seed, 6)
    spots = []
    if anatomy in ("abdomen", "chest"):
        aorta = [e for e in items if e.tissue == "blood" and 8 <= e.a <= 12]
        for e in aorta[:1]:
            for _ in range(r.integers(1, 5)):
                t = r.uniform(0, 2 * np.pi)
                spots.append((e.cx + 0.9 * e.a * math.cos(t), e.cy + 0.9 * e.b * math.sin(t), r.uniform(-0.6, 0.6)))
    else:
        spots += [(r.normal(0, 2), -30 + r.normal(0, 3), r.uniform(-0.1, 0.2))]  # pineal, behind the ventricles
        spots += [(s * 10 + r.normal(0, 1), r.normal(0, 4), r.uniform(-0.2, 0.3)) for s in (-1, 1)]
    x, y = np.meshgrid(xs, -xs)
    out = np.zeros_like(x)
    for cx, cy, zc in spots:
        rad, hu = r.uniform(0.4, 1.2), r.uniform(400, 900)
        if abs(z - zc) * Z_MM < 3 * rad:
            out += np.where((x - cx) ** 2 + (y - cy) ** 2 <= rad**2, hu, 0.0)
    return out
