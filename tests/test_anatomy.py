"""The realistic anatomy model (#30, data/detail.py): seeded and continuous, its texture's spectrum the power law it
declares, its bone the volume fraction it declares, its blur the scanner's own, and the ellipse model untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldct_bench.data.acquisition import ACQUISITIONS
from ldct_bench.data.dataset import LDCTDataset, PhantomConfig
from ldct_bench.data.detail import (
    _BONE_FRACTION,
    _GRID_MM,
    _MARROW_HU,
    _TRABECULA_HU,
    BETA,
    Z_MM,
    _fields,
    _trabecular,
    _trees,
    detail_layer,
    system_blur,
)
from ldct_bench.data.phantoms import TISSUE_HU, _Builder, _spine, phantom_slice, rasterize
from ldct_bench.data.projector import ellipse_sinogram

SIM = ACQUISITIONS["default"].simulator(128)


def layer(anatomy, seed, z, sim=SIM):
    return detail_layer(anatomy, seed, z, phantom_slice(anatomy, seed, z, True), sim)


def test_a_patient_is_its_seed_and_neighbouring_slices_are_neighbours():
    a = layer("abdomen", 3, 0.0)
    assert np.array_equal(a, layer("abdomen", 3, 0.0))
    near, far, other = layer("abdomen", 3, 0.08), layer("abdomen", 3, 0.8), layer("abdomen", 4, 0.0)
    corr = {k: np.corrcoef(a.ravel(), v.ravel())[0, 1] for k, v in (("near", near), ("far", far), ("other", other))}
    assert corr["near"] > 0.8 and corr["near"] > corr["far"] + 0.2 and corr["near"] > corr["other"] + 0.3, corr


def test_the_ellipse_model_is_untouched():
    ellipses = PhantomConfig(anatomy_model="ellipses")
    assert ellipses.dataset_name == "embedded-1041366e77c8"
    assert "anatomy_model" not in ellipses.to_dict()
    assert PhantomConfig().anatomy_model == "clinical" and PhantomConfig().dataset_name != ellipses.dataset_name
    with pytest.raises(ValueError, match="anatomy_model='voxels'"):
        PhantomConfig(anatomy_model="voxels")
    plain = phantom_slice("chest", 2, 0.1)
    assert [(e.a, e.b, e.hu) for e in plain] == [(e.a, e.b, e.hu) for e in phantom_slice("chest", 2, 0.1, False)]
    shells = {}
    for realistic in (False, True):
        b = _Builder(realistic)
        _spine(b, 0.0, 0.0)
        shells[realistic] = b.items[0].a - b.items[1].a
    assert shells == {False: 4.0, True: 1.5}  # a vertebral body's cortex: 0.5-2 mm


def test_the_texture_has_the_power_law_spectrum_it_declares():
    """The radial power spectrum of the fields falls as f^-BETA over 0.03-0.3 cycles/mm (above its 60 mm knee)."""
    a, _ = _fields(0)
    power = np.abs(np.fft.fft2(a)) ** 2
    f = np.fft.fftfreq(a.shape[0], d=_GRID_MM)
    radial = np.hypot(f[:, None], f[None, :]).ravel()
    edges = np.geomspace(0.03, 0.3, 12)
    idx = np.digitize(radial, edges)
    centres = np.sqrt(edges[:-1] * edges[1:])
    means = np.array([power.ravel()[idx == i].mean() for i in range(1, len(edges))])
    slope = np.polyfit(np.log(centres), np.log(means), 1)[0]
    assert slope == pytest.approx(-BETA, abs=0.2)


def test_trabecular_bone_has_its_volume_fraction_and_keeps_the_cancellous_mean():
    xs = np.linspace(-15, 15, 301)
    x, y = np.meshgrid(xs, xs)
    tissue = np.full(x.shape, "cancellous_bone")
    hu = TISSUE_HU["cancellous_bone"] + _trabecular(tissue, x, y, 5, 0.2)
    fraction = (hu - _MARROW_HU) / (_TRABECULA_HU - _MARROW_HU)  # bone's share of each sample's slab
    assert fraction.mean() == pytest.approx(_BONE_FRACTION, abs=0.03) and fraction.min() >= 0 and fraction.max() <= 1
    assert 0.1 < (fraction == 0).mean() < 0.9 and fraction.std() > 0.15  # a network, not a uniform grey
    assert hu.mean() == pytest.approx(TISSUE_HU["cancellous_bone"], abs=40)
    assert not np.array_equal(hu, TISSUE_HU["cancellous_bone"] + _trabecular(tissue, x, y, 5, 0.3))


def test_the_lung_trees_follow_murray_and_stay_in_the_lung():
    seg = _trees(1, 1)
    ends = np.linalg.norm(seg[:, 3:6], axis=1)
    assert ends.max() <= 0.97 + 1e-9 and len(seg) > 1000
    children: dict = {}
    for row in seg:
        children.setdefault(tuple(np.round(row[:3], 9)), []).append(row[6])
    splits = [(row[6], children[key]) for row in seg if (key := tuple(np.round(row[3:6], 9))) in children]
    assert len(splits) > 300
    for parent, kids in splits:  # Murray's law at every split
        assert len(kids) == 2 and sum(r**3 for r in kids) == pytest.approx(parent**3, rel=1e-9)
    assert seg[:, 6].max() <= 3.0 and seg[seg[:, 7] == 0, 6].min() > 0.4 * 0.35 ** (1 / 3)
    z = 0.1 * Z_MM / (2.2 * Z_MM)
    cut = seg[(np.minimum(seg[:, 2], seg[:, 5]) <= z) & (np.maximum(seg[:, 2], seg[:, 5]) >= z)]
    assert len(cut) >= 30  # vessels and airways this slice cuts through one lung
    lungs = layer("chest", 1, 0.1)
    assert (lungs > 300).sum() > 20  # vessels stand out of the lung (-850 HU) by hundreds of HU


@pytest.mark.parametrize("name", list(ACQUISITIONS))
def test_the_image_domain_blur_is_what_the_scanner_makes_of_an_object(name):
    """FBP linearity, checked: a 24 x 16 mm rod averaged over each pixel and blurred by system_blur is the noiseless FBP
    of its exact line integrals to within 2.5 % of its contrast (RMS around it), for every scanner, kernel and field,
    and closer to it than the unblurred pixels are wherever the kernel does not alias the edge (not the sharp one)."""
    sim = ACQUISITIONS[name].simulator(256)
    rows = torch.tensor([[4.0, -3.0, 12.0, 8.0, 0.4, 0.02]], dtype=torch.float64)
    fbp = sim.reconstruct(ellipse_sinogram(sim.geometry, rows)[None].float())[0].numpy() + 1000.0
    painted = rasterize(rows, sim.geometry, supersample=4).numpy() + 1000.0
    x, y = (t.numpy() for t in sim.geometry.pixel_centres())
    near = (np.abs(x - 4) < 20) & (np.abs(y + 3) < 20)
    rms = {k: np.sqrt(np.mean((v - fbp)[near] ** 2)) for k, v in (("blurred", system_blur(sim, painted)),
                                                                  ("raw", painted))}
    assert rms["blurred"] < 0.025 * painted.max(), rms
    if name != "sharp":
        assert rms["blurred"] < 0.75 * rms["raw"], rms


def test_a_realistic_dataset_simulates_with_its_detail_in_truth_and_scans(tmp_path):
    from dataclasses import replace

    from .helpers import tiny_config

    base = tiny_config(image_size=64, slices_per_patient=2, train_patients=1, val_patients=0, test_patients=1)
    made = {m: LDCTDataset.embedded(replace(base, anatomy_model=m), doses=[0.25], anatomies=["chest"],
                                    cache_dir=tmp_path, progress=False) for m in ("ellipses", "realistic")}
    pairs = {m: ds.pairs(["chest"], [0.25], ("test",), truth=True) for m, ds in made.items()}
    truth_gap = (pairs["realistic"].truth - pairs["ellipses"].truth).abs().mean().item()
    assert truth_gap > 5.0  # HU: the detail is there
    noise = {m: (p.ld - p.fd).std().item() for m, p in pairs.items()}  # the dose's noise: the same physics
    assert noise["realistic"] == pytest.approx(noise["ellipses"], rel=0.25)
    assert made["realistic"].manifest["config"]["anatomy_model"] == "realistic"


def test_the_clinical2_head_has_its_scalp_layers_and_dense_tables_and_nothing_else_changes():
    """The layered scalp: skin SKIN_MM thick all round, the subcutaneous fat, then muscle GALEA_MM + TEMPORALIS_MM
    thick at the sides and GALEA_MM at the front and back, round a skull whose tables read DENSE_TABLE_HU; the outline
    the head holder is fitted to is the skin's; the trunks and the rest of the head are the clinical model's."""
    from ldct_bench.data.phantoms import (
        DENSE_TABLE_HU,
        GALEA_MM,
        SKIN_MM,
        SUBCUTIS_MM,
        TEMPORALIS_MM,
        outline,
        patient_shape,
    )

    for seed in (0, 7):
        old, new = phantom_slice("head", seed, 0.0, True, True), phantom_slice("head", seed, 0.0, True, True, True)
        skin, fat, muscle, skull = new[:4]
        assert [e.tissue for e in (skin, fat, muscle, skull)] == ["muscle", "fat", "muscle", "cortical_bone"]
        assert (skin.a - fat.a, skin.b - fat.b) == pytest.approx((SKIN_MM, SKIN_MM))
        assert (fat.a - muscle.a, fat.b - muscle.b) == pytest.approx(SUBCUTIS_MM)
        assert (muscle.a - skull.a, muscle.b - skull.b) == pytest.approx((GALEA_MM + TEMPORALIS_MM, GALEA_MM))
        assert (skin.a, skin.b) == pytest.approx(outline("head", seed, layered_scalp=True))
        assert [e.hu for e in new if e.tissue == "cortical_bone"] == [DENSE_TABLE_HU] * 2
        assert [(e.a, e.b, e.tissue) for e in new[4:]] == [(e.a, e.b, e.tissue) for e in old[2:]]  # the same inside
        assert (skull.a, skull.b) == (old[1].a, old[1].b) and patient_shape(seed)[3] == pytest.approx(new[0].phi_deg)
        for anatomy in ("chest", "abdomen"):
            same = phantom_slice(anatomy, seed, 0.1, True, True), phantom_slice(anatomy, seed, 0.1, True, True, True)
            assert [vars(e) for e in same[0]] == [vars(e) for e in same[1]]


def test_clinical2_scans_heads_at_the_head_protocol_s_flux_and_the_trunk_as_before(tmp_path):
    """A head of the clinical2 model at HEAD_PROTOCOL_FLUX times the flux: its full-dose noise in the brain is the
    clinical head's / sqrt(HEAD_PROTOCOL_FLUX) (within 10 %); the chest is the clinical model's, bit for bit."""
    from dataclasses import replace

    from ldct_bench.data.dataset import HEAD_PROTOCOL_FLUX

    base = PhantomConfig.sized(96, 1, 2, seed=3)
    made = {m: LDCTDataset.embedded(replace(base, anatomy_model=m), anatomies=["head", "chest"], splits=("test",),
                                    cache_dir=tmp_path, progress=False) for m in ("clinical", "clinical2")}
    patient = made["clinical"].patients("head", "test")[0]
    noise = {}
    for m, ds in made.items():
        truth, full = ds.volume("head", patient, "truth")[0], ds.volume("head", patient, "full")[0]
        brain = (truth > 15) & (truth < 50)  # grey and white matter
        brain[:, :10] = brain[:, -10:] = False
        noise[m] = float((full - truth)[brain].std())
    assert noise["clinical"] / noise["clinical2"] == pytest.approx(HEAD_PROTOCOL_FLUX ** 0.5, rel=0.1), noise
    chest = [ds.volume("chest", patient, "full") for ds in made.values()]
    assert np.array_equal(*chest)
