"""Procedural anatomical phantoms: head, chest and abdomen slices built from ellipses.

Each *patient* is a seed: body size, organ sizes and positions, vessels, bowel gas and
lesions differ between patients, and change smoothly from slice to slice within a
patient, so adjacent slices are real neighbours for contextual methods.

A phantom slice is a list of ellipses with *absolute* HU values, painted in order
(later ones sit inside earlier ones). For exact analytic projection they are turned
into additive attenuation increments (as in Shepp-Logan / FORBILD): each ellipse adds
the difference between its value and the value of what it is painted on.

Fine, low-contrast tissue texture (a smooth 3-D random field whose amplitude depends
on tissue) is added in the image domain; by linearity of FBP this equals projecting
it, and its effect on photon counts (< 0.1 % of the attenuation) is negligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..conventions import ANATOMIES
from .geometry import FanBeamGeometry
from .projector import hu_to_mu, mu_to_hu

# Reference tissue values (HU) used by the phantoms and checked by the tests.
TISSUE_HU = {
    "air": -1000.0, "lung": -850.0, "fat": -100.0, "water": 0.0, "csf": 8.0,
    "white_matter": 25.0, "grey_matter": 40.0, "muscle": 50.0, "blood": 45.0,
    "liver": 60.0, "spleen": 50.0, "kidney": 150.0, "bowel": 20.0,
    "cancellous_bone": 250.0, "cortical_bone": 1200.0, "rib": 700.0, "diploe": 700.0,
}


# the outermost ellipse's semi-axes (mm) before a patient's scale: the skull's (the scalp lies SCALP_MM outside it)
# at the head's widest slice, the body's in the trunk
HEAD_AXES, SCALP_MM = (92.0, 115.0), 8.0
TRUNK_AXES = {"chest": (160.0, 112.0), "abdomen": (165.0, 120.0)}
# the layered scalp (mm): skin, the subcutaneous fibro-fatty layer (lateral, front-back), the galea, and the temporal
# muscles over the sides of the skull: the scalp's 5-7 mm and a temporalis of up to ~1 cm over the temporal squama,
# all nested ellipses (a muscle ellipse wider than the skull by GALEA_MM + TEMPORALIS_MM at the sides, GALEA_MM at the
# front and back); and the skull's cortical tables as dense as compact bone reads (~1500 HU at 120 kV)
SKIN_MM, SUBCUTIS_MM, GALEA_MM, TEMPORALIS_MM = 1.5, (3.0, 3.5), 1.0, 8.0
SKIN_HU, SUBCUTIS_HU, DENSE_TABLE_HU = 40.0, -80.0, 1500.0


@dataclass(frozen=True)
class AnatomyModel:
    """What an anatomy model (conventions.ANATOMY_MODELS, `--phantoms`) draws: each is frozen, so its datasets, and the
    checkpoints keyed by them, stay reproducible after a newer model becomes the default."""

    realistic: bool = False  # thin cortical shells and a skull with diploe; data/detail.py adds the rest
    table: bool = False  # lying on the scanner's table (data/support.py), reconstructed inside its circle
    layered_scalp: bool = False  # skin, subcutaneous fat, galea and temporal muscles; dense cortical tables
    head_protocol: bool = False  # heads scanned at a head protocol's flux (dataset.HEAD_PROTOCOL_FLUX)


ANATOMY_MODEL = {"ellipses": AnatomyModel(), "realistic": AnatomyModel(realistic=True),
                 "clinical": AnatomyModel(realistic=True, table=True),
                 "clinical2": AnatomyModel(realistic=True, table=True, layered_scalp=True, head_protocol=True)}


@dataclass
class Ellipse:
    cx: float
    cy: float
    a: float
    b: float
    phi_deg: float
    hu: float
    tissue: str

    def contains(self, x, y):
        c, s = math.cos(math.radians(self.phi_deg)), math.sin(math.radians(self.phi_deg))
        dx, dy = x - self.cx, y - self.cy
        u, v = dx * c + dy * s, -dx * s + dy * c
        return (u / self.a) ** 2 + (v / self.b) ** 2 <= 1.0


class _Builder:
    """Collects painted ellipses for one slice."""

    def __init__(self, realistic: bool = False, table: bool = False, layered_scalp: bool = False):
        self.items: list[Ellipse] = []
        self.realistic = realistic  # thin cortical shells and a skull with diploe (data/detail.py adds the rest)
        self.table = table  # lying on the table: a trunk deep enough behind its spine to lie on (_trunk_wall)
        self.layered_scalp = layered_scalp  # the head's scalp in layers, its skull's tables dense (AnatomyModel)

    def add(self, cx, cy, a, b, phi, tissue, hu=None):
        self.items.append(Ellipse(float(cx), float(cy), float(a), float(b), float(phi),
                                  float(TISSUE_HU[tissue] if hu is None else hu), tissue))


def _rng(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _head(b: _Builder, r: np.random.Generator, z: float, sx: float, sy: float, phase: float):
    k = 1.0 - 0.25 * z * z  # head narrows away from the mid-ventricular level
    A, B = HEAD_AXES[0] * sx * k, HEAD_AXES[1] * sy * k
    table_hu = None
    if b.layered_scalp:
        for (da, db), tissue, hu in _scalp_layers():
            b.add(0, 0, A + da, B + db, 0, tissue, hu)
        table_hu = DENSE_TABLE_HU
    else:
        b.add(0, 0, A + SCALP_MM, B + SCALP_MM, 0, "muscle", 30)  # scalp
    b.add(0, 0, A, B, 0, "cortical_bone", table_hu)  # skull
    if b.realistic:  # outer table, diploe (trabecular in detail.py), inner table
        b.add(0, 0, A - 1.8, B - 1.8, 0, "diploe")
        b.add(0, 0, A - 5.4, B - 5.4, 0, "cortical_bone", table_hu)
    b.add(0, 0, A - 7, B - 7, 0, "csf")
    b.add(0, 1, A - 10, B - 10, 0, "grey_matter")
    for side in (-1, 1):
        b.add(side * 0.33 * A, 2, 0.3 * A, 0.55 * B, side * 4, "white_matter")
    vent = max(0.0, 1 - 2.2 * abs(z - 0.1 * math.sin(phase)))
    if vent > 0.05:
        for side in (-1, 1):
            b.add(side * 9, 5, 4 + 2 * vent, 24 * vent + 2, side * 14, "csf", 5)
    for side in (-1, 1):  # deep grey nuclei
        b.add(side * 0.2 * A, -0.05 * B, 9, 13, -side * 20, "grey_matter", 38)
    for _ in range(r.integers(1, 4)):  # low-contrast lesions in white matter
        side = r.choice([-1, 1])
        b.add(side * (0.33 * A + r.uniform(-8, 8)), r.uniform(-0.35, 0.4) * B,
              *(np.full(2, r.uniform(3, 7))), 0, "white_matter", 25 + r.choice([-1, 1]) * r.uniform(6, 14))


def _scalp_layers() -> list[tuple[tuple[float, float], str, float]]:
    """The layered scalp, outermost first: how far each layer's ellipse reaches beyond the skull's (lateral,
    front-back), its tissue and HU."""
    muscle = (GALEA_MM + TEMPORALIS_MM, GALEA_MM)  # the galea, and the temporal muscles at the sides
    fat = (muscle[0] + SUBCUTIS_MM[0], muscle[1] + SUBCUTIS_MM[1])
    return [((fat[0] + SKIN_MM, fat[1] + SKIN_MM), "muscle", SKIN_HU), (fat, "fat", SUBCUTIS_HU),
            (muscle, "muscle", TISSUE_HU["muscle"])]


def _chest(b: _Builder, r: np.random.Generator, z: float, sx: float, sy: float, phase: float):
    A, B = TRUNK_AXES["chest"][0] * sx, TRUNK_AXES["chest"][1] * sy
    _trunk_wall(b, A, B, [(0, 0, 0, "fat", None), (10, 9, 0, "muscle", None), (22, 20, -3, "fat", -80)])
    heart = 0.75 + 0.25 * math.sin(1.2 * z + phase)
    lx = 0.5 * A
    for side in (-1, 1):
        b.add(side * lx, 4, 0.42 * A - 3 * heart, 0.72 * B, side * -4, "lung")
    b.add(0, 22, 0.17 * A * heart + 6, 0.3 * B * heart + 6, 12, "blood", 40)  # heart
    b.add(-0.14 * A, -0.35 * B, 10, 10, 0, "blood")  # descending aorta
    b.add(0, 0.86 * B - 8, 13, 5, 0, "cancellous_bone", 400)  # sternum
    _spine(b, 0, -B + 32)
    for deg in (-160, -132, -48, -20, 20, 48, 132, 160):  # ribs in the chest-wall muscle ring,
        ang = math.radians(deg)  # clear of the sternum (top) and the spine (bottom)
        b.add(math.cos(ang) * (A - 16), math.sin(ang) * (B - 15.5), 4.5, 3.0, math.degrees(ang) + 90, "rib")
    for side in (-1, 1):  # vessels, airways and nodules inside each lung
        cx, a, bb = side * lx, 0.42 * A - 3 * heart - 6, 0.72 * B - 6
        for _ in range(r.integers(14, 24)):
            t, rr = r.uniform(0, 2 * math.pi), math.sqrt(r.uniform(0.02, 0.85))
            x, y = cx + rr * a * math.cos(t + 0.3 * z), 4 + rr * bb * math.sin(t + 0.3 * z)
            rad = r.uniform(1.2, 4.5) * (1.2 - 0.6 * rr)
            if r.uniform() < 0.25:  # airway: a soft-tissue wall around air
                b.add(x, y, rad + 1.3, rad + 1.3, 0, "blood", 40)
                b.add(x, y, rad, rad, 0, "air")
            else:
                b.add(x, y, rad, rad * r.uniform(1.0, 1.8), r.uniform(0, 180), "blood", 40)
    for _ in range(r.integers(0, 3)):  # solid nodules
        side = r.choice([-1, 1])
        b.add(side * lx + r.uniform(-20, 20), r.uniform(-40, 40), *(np.full(2, r.uniform(3, 6))), 0, "lung",
              r.uniform(-20, 40))


def _abdomen(b: _Builder, r: np.random.Generator, z: float, sx: float, sy: float, phase: float):
    A, B = TRUNK_AXES["abdomen"][0] * sx, TRUNK_AXES["abdomen"][1] * sy
    _trunk_wall(b, A, B, [(0, 0, 0, "fat", None), (13, 11, 0, "muscle", None), (24, 21, 0, "fat", -90)])
    liv = 0.85 + 0.15 * math.sin(z + phase)
    lcx, lcy, la, lb = -0.33 * A, 0.2 * B, 0.42 * A * liv, 0.42 * B * liv
    b.add(lcx, lcy, la, lb, 20, "liver")
    b.add(lcx + 0.3 * la, lcy + 0.45 * lb, 9, 12, 0, "water", 10)  # gallbladder
    b.add(0.52 * A, -0.15 * B, 0.17 * A, 0.34 * B * liv, -30, "spleen")
    for side in (-1, 1):
        kx, ky = side * 0.38 * A, -0.52 * B
        b.add(kx, ky, 20, 30, side * 20, "kidney")
        b.add(kx + side * 4, ky, 9, 16, side * 20, "muscle", 40)  # medulla
        b.add(side * 0.2 * A, -0.68 * B, 13, 19, side * 10, "muscle")  # psoas
    b.add(0.1 * A, -0.45 * B, 10, 10, 0, "blood")  # aorta
    b.add(-0.1 * A, -0.4 * B, 12, 9, 0, "blood")  # IVC
    b.add(0.12 * A, -0.12 * B, 0.22 * A, 0.08 * B, 12, "muscle", 45)  # pancreas
    _spine(b, 0, -B + 32)
    loops: list[tuple[float, float, float]] = []
    for _ in range(r.integers(4, 8)):  # bowel loops, some with gas; loops do not overlap
        x, y = r.uniform(-0.05, 0.55) * A + 4 * z, r.uniform(0.05, 0.6) * B
        rad = r.uniform(9, 17)
        if any(math.hypot(x - x2, y - y2) < rad + r2 + 1 for x2, y2, r2 in loops):
            continue
        loops.append((x, y, rad))
        b.add(x, y, rad, rad * r.uniform(0.7, 1.0), r.uniform(0, 180), "bowel")
        if r.uniform() < 0.6:
            g = rad * r.uniform(0.3, 0.6)
            b.add(x, y, g, g, 0, "air")
    for _ in range(r.integers(1, 4)):  # low-contrast liver lesions
        t, rr = r.uniform(0, 2 * math.pi), r.uniform(0, 0.55)
        rad = r.uniform(4, 10)
        b.add(lcx + rr * la * math.cos(t), lcy + rr * lb * math.sin(t), rad, rad, 0, "liver",
              60 + r.choice([-1, 1]) * r.uniform(10, 30))


BACK_MM = 32.0  # how much further the clinical trunk's back reaches behind the other models'


def _trunk_wall(b: _Builder, A: float, B: float, layers: list[tuple]):
    """The body wall: subcutaneous fat, muscle and the fat inside it, each layer (shrink of a, shrink of b, centre y,
    tissue, HU) an ellipse. The first models' back is too thin for its spine, whose spinal canal and spinous
    process stick out into the air behind the patient. The clinical model, whose patients lie on a couch (nothing may
    stick out below their backs), moves the two outer layers' backs BACK_MM further back (paraspinal muscle and the
    fat over it, 9-11 mm) and the inner fat's to 0.5 mm under the vertebral body (at -B + 13), so that the canal and
    the spinous process lie in muscle, as they do. The front does not move; phantom_slice centres the deeper trunk."""
    for k, (da, db, cy, tissue, hu) in enumerate(layers):
        a, half_b = A - da, B - db
        if b.table:
            back = BACK_MM if k < len(layers) - 1 else (B - 12.5) - (half_b - cy)  # how far the back moves
            cy, half_b = cy - back / 2, half_b + back / 2
        b.add(0, cy, a, half_b, 0, tissue, hu)


def _spine(b: _Builder, x0: float, y0: float):
    shell = 1.5 if b.realistic else 4.0  # a vertebral body's cortex is 0.5-2 mm
    b.add(x0, y0, 21, 19, 0, "cortical_bone", 700)
    b.add(x0, y0, 21 - shell, 19 - shell, 0, "cancellous_bone")
    b.add(x0, y0 - 27, 7, 7, 0, "cortical_bone", 700)
    b.add(x0, y0 - 27, 5.5, 5.5, 0, "csf", 10)  # spinal canal
    b.add(x0, y0 - 42, 5, 9, 0, "cortical_bone", 700)  # spinous process


_BUILDERS = {"head": _head, "chest": _chest, "abdomen": _abdomen}


def patient_shape(patient_seed: int) -> tuple[float, float, float, float]:
    """A patient's build, the same at every slice: x and y scale, the phase of the organs' motion along z, and the
    tilt (degrees) of the whole body on the table."""
    pr = _rng(patient_seed, 0)
    sx, sy = pr.uniform(0.85, 1.12, size=2)
    phase = pr.uniform(0, 2 * math.pi)
    return float(sx), float(sy), float(phase), float(pr.uniform(-5, 5))


def outline(anatomy: str, patient_seed: int, layered_scalp: bool = False) -> tuple[float, float]:
    """Semi-axes (mm) of the clinical model's patient's outermost ellipse at its widest slice, centred on the isocentre
    before the patient's tilt: what data/support.py fits the table's hardware to."""
    sx, sy = patient_shape(patient_seed)[:2]
    if anatomy == "head":
        da, db = _scalp_layers()[0][0] if layered_scalp else (SCALP_MM, SCALP_MM)
        return HEAD_AXES[0] * sx + da, HEAD_AXES[1] * sy + db
    return TRUNK_AXES[anatomy][0] * sx, TRUNK_AXES[anatomy][1] * sy + BACK_MM / 2


def phantom_slice(anatomy: str, patient_seed: int, z: float, realistic: bool = False,
                  table: bool = False, layered_scalp: bool = False) -> list[Ellipse]:
    """Ellipses (absolute HU, painter's order) of one slice; z in [-1, 1] spans the patient's stack. `realistic`:
    the ellipses of the realistic anatomy model (thin cortices, diploe), to which data/detail.py adds its layer;
    `table`: the clinical model's, whose trunk lies on a couch (a deeper back, _trunk_wall); `layered_scalp`: the
    clinical2 model's head (_scalp_layers, dense cortical tables)."""
    if anatomy not in _BUILDERS:
        raise ValueError(f"unknown anatomy {anatomy!r}; choose from {', '.join(ANATOMIES)}.")
    sx, sy, phase, rot = patient_shape(patient_seed)
    b = _Builder(realistic, table, layered_scalp)
    # the per-slice generator is seeded by patient only, so random structures persist across
    # slices and move smoothly with z (their positions depend on z explicitly)
    _BUILDERS[anatomy](b, _rng(patient_seed, 1), z, sx, sy, phase)
    lift = BACK_MM / 2 if table and anatomy != "head" else 0.0  # the clinical trunk's deeper back, centred
    c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    for e in b.items:
        e.cy += lift
        e.cx, e.cy = c * e.cx - s * e.cy, s * e.cx + c * e.cy
        e.phi_deg += rot
    return nest(b.items)


def _outline(e: Ellipse, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Points on the boundary (and at half radius) of an ellipse."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    frac = np.r_[np.full(n, 0.999), np.full(n, 0.5)]
    t = np.r_[t, t]
    c, s = math.cos(math.radians(e.phi_deg)), math.sin(math.radians(e.phi_deg))
    u, v = frac * e.a * np.cos(t), frac * e.b * np.sin(t)
    return e.cx + u * c - v * s, e.cy + u * s + v * c


def nest(items: list[Ellipse], shrink: float = 0.85, tries: int = 6) -> list[Ellipse]:
    """Make every structure lie wholly inside one painted region, so additive = painted HU.

    A structure whose outline crosses a boundary that its centre does not (a rib over the
    fat/muscle edge, two bowel loops touching) is shrunk until it fits, or dropped.
    """
    kept: list[Ellipse] = []
    for e in items:
        shapes = _Shapes(kept)
        for _ in range(tries):
            px, py = _outline(e)
            if np.all(shapes.contain(px, py) == shapes.contain(np.array([e.cx]), np.array([e.cy]))):
                kept.append(e)
                break
            e = Ellipse(e.cx, e.cy, e.a * shrink, e.b * shrink, e.phi_deg, e.hu, e.tissue)
    return kept


class _Shapes:
    """Several ellipses' `Ellipse.contains` at once (the same arithmetic, so the same answers): `nest` asks it of
    every ellipse kept so far for every outline point of every candidate."""

    def __init__(self, items: list[Ellipse]):
        cols = [(k.cx, k.cy, k.a, k.b, math.cos(math.radians(k.phi_deg)), math.sin(math.radians(k.phi_deg)))
                for k in items]
        self.cx, self.cy, self.a, self.b, self.c, self.s = np.array(cols, dtype=np.float64).reshape(-1, 6).T[..., None]

    def contain(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(ellipses, points): whether each ellipse contains each point."""
        dx, dy = x - self.cx, y - self.cy
        u, v = dx * self.c + dy * self.s, -dx * self.s + dy * self.c
        return (u / self.a) ** 2 + (v / self.b) ** 2 <= 1.0


def to_additive(items: list[Ellipse]) -> torch.Tensor:
    """Painter's-order ellipses -> (E, 6) additive rows (cx, cy, a, b, phi_rad, d_mu)."""
    rows = []
    for i, e in enumerate(items):
        below = 0.0  # air
        for prev in items[:i]:
            if prev.contains(e.cx, e.cy):
                below = hu_to_mu(torch.tensor(prev.hu)).item()
        rows.append([e.cx, e.cy, e.a, e.b, math.radians(e.phi_deg), hu_to_mu(torch.tensor(e.hu)).item() - below])
    return torch.tensor(rows, dtype=torch.float64)


def rasterize(rows: torch.Tensor, geom: FanBeamGeometry, supersample: int = 3) -> torch.Tensor:
    """The additive phantom `rows` (what is projected) sampled on the image grid, in HU (H, W).

    Each pixel averages supersample^2 points, so it is the truth an ideal scanner would see. Each ellipse is tested
    only on the samples of its bounding box (plus a sample of margin), in numba, rows in parallel.
    """
    n, d = geom.image_size, geom.pixel_mm
    off = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    c = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * d
    xs = (c[:, None] + off[None, :] * d).reshape(-1)  # sample columns at x = xs, rows at y = -xs (row 0 on top)
    step = d / supersample
    params, boxes = np.zeros((len(rows), 7)), np.zeros((len(rows), 4), dtype=np.int64)
    for k, (cx, cy, a, b, phi, dmu) in enumerate(rows.tolist()):
        cp, sp = math.cos(phi), math.sin(phi)
        hx, hy = math.hypot(a * cp, b * sp) + step, math.hypot(a * sp, b * cp) + step  # the box's half-widths
        params[k] = cx, cy, a, b, cp, sp, dmu
        boxes[k] = *_index_range(xs, -(cy + hy), -(cy - hy)), *_index_range(xs, cx - hx, cx + hx)
    mu = torch.from_numpy(_paint(xs.numpy(), params, boxes))
    mu = mu.reshape(n, supersample, n, supersample).mean(dim=(1, 3))
    return mu_to_hu(mu).float()


@numba.njit(parallel=True, cache=True)
def _paint(xs, params, boxes):
    """Sum of dmu over the ellipses containing each sample, added in the rows' order (no fast-math: the bytes of
    testing every sample against every ellipse)."""
    n = xs.size
    mu = np.zeros((n, n))
    for r in numba.prange(n):
        y, row = -xs[r], mu[r]
        for k in range(params.shape[0]):
            r0, r1, c0, c1 = boxes[k]
            if r < r0 or r >= r1:
                continue
            cx, cy, a, b, cp, sp, dmu = params[k]
            for c in range(c0, c1):
                dx, dy = xs[c] - cx, y - cy
                ua, vb = (dx * cp + dy * sp) / a, (-dx * sp + dy * cp) / b
                if ua * ua + vb * vb <= 1.0:
                    row[c] += dmu
    return mu


def _index_range(sorted_values: torch.Tensor, lo: float, hi: float) -> tuple[int, int]:
    """The slice of an ascending grid whose values lie in [lo, hi]."""
    return (int(torch.searchsorted(sorted_values, lo, side="left")),
            int(torch.searchsorted(sorted_values, hi, side="right")))


def texture_amplitude(hu: np.ndarray) -> np.ndarray:
    """Texture standard deviation (HU) by tissue: none in air, some in lung, more in bone."""
    return np.interp(hu, [-1000, -950, -850, -200, 150, 400, 1200], [0, 0, 25, 8, 8, 30, 40])


def texture_volume(seed: int, n_slices: int, size: int, sigma_px: float = 1.2) -> np.ndarray:
    """Unit-std smooth 3-D random field for one patient (slices correlate with their neighbours)."""
    noise = _rng(seed, 2).standard_normal((n_slices + 4, size, size)).astype(np.float32)
    field = gaussian_filter(noise, sigma=(1.0, sigma_px, sigma_px), mode="wrap")[2:-2]
    return field / field.std()
