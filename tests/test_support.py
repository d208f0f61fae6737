"""The clinical phantoms' table (data/support.py): exact line integrals of the hardware, hardware that never enters the
patient, photons counted through it, and nothing reconstructed outside the scanner's circle."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path

from ldct_bench.conventions import CT_MIN_HU
from ldct_bench.data.dataset import PhantomConfig, _simulate_patient
from ldct_bench.data.detail import fine_grid, owner_map
from ldct_bench.data.geometry import FanBeamGeometry, ray_lines
from ldct_bench.data.phantoms import phantom_slice
from ldct_bench.data.projector import hu_to_mu
from ldct_bench.data.simulate import Simulator
from ldct_bench.data.support import Support, patient_support, support_sinogram

GEOM = FanBeamGeometry()


@pytest.mark.parametrize("anatomy", ["head", "abdomen"])
def test_the_hardware_s_line_integrals_are_the_lengths_of_its_chords(anatomy):
    """Against a Riemann sum along each ray of matplotlib's point-in-polygon test (another arithmetic): the chord
    through a thin cradle shell and a thick couch core alike, to the sum's own step."""
    full = patient_support(anatomy, 4)
    pick = [0, len(full.hu) // 2 - 3, len(full.hu) - 5]  # a cushion or pad quad, one mid-band, a shell or skin quad
    support = Support(full.quads[pick], full.hu[pick])
    exact = support_sinogram(GEOM, support).numpy()
    cos_t, sin_t, t = (a.numpy() for a in ray_lines(GEOM))
    hit = np.argwhere(exact > 0)
    rays = hit[np.random.default_rng(0).choice(len(hit), 60, replace=False)]
    step = 0.004
    s = np.arange(-300, 300, step)
    paths = [Path(q) for q in support.quads]
    mu = hu_to_mu(np.asarray(support.hu))
    for v, c in rays:
        ct, st, tt = cos_t[v, c], sin_t[v, c], t[v, c]
        points = np.stack((tt * ct - s * st, tt * st + s * ct), -1)
        summed = sum(m * step * p.contains_points(points).sum() for p, m in zip(paths, mu))
        assert summed == pytest.approx(exact[v, c], abs=2 * step * mu.max() * len(paths)), (v, c)


def test_the_quadrilaterals_are_convex_and_counter_clockwise():
    for anatomy in ("head", "chest", "abdomen"):
        q = patient_support(anatomy, 9).quads
        edge = np.roll(q, -1, axis=1) - q
        turn = edge[..., 0] * np.roll(edge, -1, axis=1)[..., 1] - edge[..., 1] * np.roll(edge, -1, axis=1)[..., 0]
        assert (turn > 0).all(), anatomy  # every corner turns left: convex, counter-clockwise


@pytest.mark.parametrize("anatomy", ["head", "chest", "abdomen"])
def test_the_hardware_never_enters_the_patient(anatomy):
    """At the patient's widest slice and the stack's ends, for tilted and elongated patients (head seeds 112 and 126
    met their cushion before the tilt was allowed for)."""
    xs = fine_grid(GEOM)
    x, y = np.meshgrid(xs, -xs)
    for seed in (0, 3, 112, 126):
        covered = patient_support(anatomy, seed).covers(x, y)
        assert covered.any()
        for z in (-0.62, 0.0, 0.62):
            inside = owner_map(phantom_slice(anatomy, seed, z, True, True), xs) >= 0
            assert not (covered & inside).any(), (seed, z)


def test_the_clinical_patient_lies_on_counted_hardware_inside_the_scanner_s_circle():
    sim = Simulator()
    made = {m: _simulate_patient(PhantomConfig(slices_per_patient=1, anatomy_model=m), sim, "head", 2,
                                 ["truth", "full", "d0.2500"]) for m in ("realistic", "clinical")}
    outside = GEOM.outside_circle().numpy()
    assert outside.mean() == pytest.approx(1 - np.pi / 4, abs=0.01)
    clinical = made["clinical"]
    assert all((image[:, outside] == CT_MIN_HU).all() for image in clinical.values())
    # the cushion's middle, straight under the head, reads its HU in the noiseless truth
    support = patient_support("head", 2)
    mid = support.quads[len(support.hu) // 4 - 1: len(support.hu) // 4 + 1].mean(axis=(0, 1))  # cushion, bottom
    row, col = int(round((GEOM.image_size - 1) / 2 - mid[1] / GEOM.pixel_mm)), int(round((GEOM.image_size - 1) / 2
                                                                                            + mid[0] / GEOM.pixel_mm))
    assert clinical["truth"][0, row, col] == pytest.approx(support.hu[0], abs=40)
    # the same noise draws through more attenuation: the head's noise rises, so the photons met the hardware
    head = ~outside & (made["realistic"]["truth"][0] > -500)
    noise = {m: (v["d0.2500"][0] - v["full"][0])[head].std() for m, v in made.items()}
    assert noise["clinical"] > 1.01 * noise["realistic"], noise
