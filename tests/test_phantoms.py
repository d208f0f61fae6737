"""Phantoms: tissue classes have their intended HU, patients differ, neighbouring slices are neighbours."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldct_bench.data.geometry import FanBeamGeometry
from ldct_bench.data.phantoms import ANATOMIES, TISSUE_HU, phantom_slice, rasterize, to_additive
from ldct_bench.data.projector import mu_to_hu

GEOM = FanBeamGeometry(image_size=128)


def value_at(rows: torch.Tensor, x: float, y: float) -> float:
    """HU of the additive phantom (what is projected) at one point."""
    from ldct_bench.data.projector import mu_to_hu

    mu = 0.0
    for cx, cy, a, b, phi, dmu in rows.tolist():
        c, s = np.cos(phi), np.sin(phi)
        u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
        mu += dmu * ((u / a) ** 2 + (v / b) ** 2 <= 1)
    return float(mu_to_hu(torch.tensor(mu)))


EXPECTED = {
    "head": {"cortical_bone", "csf", "grey_matter", "white_matter"},
    "chest": {"fat", "muscle", "lung", "blood", "rib", "cancellous_bone"},
    "abdomen": {"fat", "muscle", "liver", "spleen", "kidney", "bowel", "air", "cancellous_bone"},
}


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_tissue_classes_have_their_intended_hu(anatomy):
    items = phantom_slice(anatomy, patient_seed=11, z=0.0)
    rows = to_additive(items)
    found = set()
    for i, e in enumerate(items):
        # a point of the structure that nothing painted later covers shows the structure's own value
        for frac in (0.0, 0.5, 0.8, 0.95, 0.99):
            c, s = np.cos(np.radians(e.phi_deg)), np.sin(np.radians(e.phi_deg))
            pts = [(e.cx + frac * (e.a * np.cos(t) * c - e.b * np.sin(t) * s),
                    e.cy + frac * (e.a * np.cos(t) * s + e.b * np.sin(t) * c))
                   for t in np.linspace(0, 2 * np.pi, 12, endpoint=False)]
            free = [p for p in pts if not any(later.contains(*p) for later in items[i + 1:])]
            if free:
                break
        if not free:
            continue
        assert value_at(rows, *free[0]) == pytest.approx(e.hu, abs=0.5), (e.tissue, e.hu)
        if e.hu == TISSUE_HU.get(e.tissue):
            found.add(e.tissue)
    assert EXPECTED[anatomy] <= found, EXPECTED[anatomy] - found


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_patients_differ_and_adjacent_slices_are_neighbours(anatomy):
    a = rasterize(to_additive(phantom_slice(anatomy, 1, 0.0)), GEOM)
    b = rasterize(to_additive(phantom_slice(anatomy, 2, 0.0)), GEOM)
    a_next = rasterize(to_additive(phantom_slice(anatomy, 1, 0.08)), GEOM)
    between_patients = (a - b).abs().mean().item()
    between_slices = (a - a_next).abs().mean().item()
    assert between_patients > 20
    assert 0 < between_slices < between_patients / 2


def test_lesions_are_low_contrast_and_small():
    items = phantom_slice("abdomen", 5, 0.0)
    lesions = [e for e in items if e.tissue == "liver" and e.hu != TISSUE_HU["liver"]]
    assert lesions and all(4 <= e.a <= 10 and 10 <= abs(e.hu - TISSUE_HU["liver"]) <= 30 for e in lesions)


def test_unknown_anatomy():
    with pytest.raises(ValueError, match="unknown anatomy 'knee'"):
        phantom_slice("knee", 0, 0.0)


def test_rasterize_visits_only_each_ellipse_s_box_and_gets_the_full_grid_s_answer():
    """Against every supersample tested against every ellipse (the straightforward version), bit for bit, for
    rotated and off-centre ellipses of every anatomy."""
    geom = FanBeamGeometry(image_size=64)
    for anatomy in ANATOMIES:
        rows = to_additive(phantom_slice(anatomy, 4, 0.2))
        ss, n, d = 3, geom.image_size, geom.pixel_mm
        off = (torch.arange(ss, dtype=torch.float64) + 0.5) / ss - 0.5
        xs = ((torch.arange(n, dtype=torch.float64) - (n - 1) / 2)[:, None] * d + off[None, :] * d).reshape(-1)
        Y, X = torch.meshgrid(-xs, xs, indexing="ij")
        mu = torch.zeros_like(X)
        for cx, cy, a, b, phi, dmu in rows.tolist():
            u = (X - cx) * math.cos(phi) + (Y - cy) * math.sin(phi)
            v = -(X - cx) * math.sin(phi) + (Y - cy) * math.cos(phi)
            mu += dmu * ((u / a) ** 2 + (v / b) ** 2 <= 1.0)
        full = mu_to_hu(mu.reshape(n, ss, n, ss).mean(dim=(1, 3))).float()
        assert torch.equal(rasterize(rows, geom), full), anatomy


def test_nest_asks_every_kept_ellipse_what_ellipse_contains_would_answer():
    """`nest` tests a candidate's outline against all kept ellipses at once; at points within rounding of their
    boundaries (where a different formula would flip answers) it must agree with `Ellipse.contains` exactly."""
    from ldct_bench.data.phantoms import _Shapes

    items = phantom_slice("chest", 3, 0.1)
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 2 * np.pi, 400)
    points = []
    for e in items[:12]:  # points scattered within a few ulps of each boundary
        r = 1 + rng.uniform(-4e-16, 4e-16, t.size)
        c, s = math.cos(math.radians(e.phi_deg)), math.sin(math.radians(e.phi_deg))
        u, v = r * e.a * np.cos(t), r * e.b * np.sin(t)
        points.append((e.cx + u * c - v * s, e.cy + u * s + v * c))
    x, y = (np.concatenate(z) for z in zip(*points))
    together = _Shapes(items).contain(x, y)
    alone = np.stack([e.contains(x, y) for e in items])
    assert np.array_equal(together, alone)
    assert 0.2 < together[np.arange(12)].reshape(12, 12, -1)[np.arange(12), np.arange(12)].mean() < 0.8
