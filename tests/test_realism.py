"""Realism measures against analytic answers, the InVesalius reader against files it makes and the real volume,
and a fresh small sample of the realistic phantoms against the real slices pydicom ships (#30.2)."""

from __future__ import annotations

import io
import plistlib
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file

from ldct_bench.data.invesalius import read_inv3, write_dicom
from ldct_bench.metrics.realism import (
    AREA_SHARE,
    FINE_SIGMA_MM,
    body_mask,
    cerebral_levels,
    fine_sd,
    gradient_percentiles,
    measure,
    soft_tissue_rois,
    spectral_slope,
)

from .helpers import CRANIUM


def power_law_field(n: int, pixel_mm: float, beta: float, seed: int = 0) -> np.ndarray:
    f = np.fft.fftfreq(n, pixel_mm)
    radial = np.hypot(f[:, None], f[None, :])
    radial[0, 0] = 1.0
    amp = radial ** (-beta / 2)
    field = np.fft.ifft2(np.fft.fft2(np.random.default_rng(seed).standard_normal((n, n))) * amp).real
    return field / field.std()


@pytest.mark.parametrize("beta", [1.0, 2.0, 3.0])
def test_the_spectral_slope_of_a_power_law_field_is_its_exponent(beta):
    images = [power_law_field(256, 0.5, beta, s) for s in range(4)]
    assert spectral_slope(images, 0.5) == pytest.approx(beta, abs=0.15)


def test_gradients_rois_and_the_body_mask_on_images_with_known_answers():
    yy, xx = np.mgrid[:200, :200]
    disk = (yy - 100) ** 2 + (xx - 100) ** 2 < 80**2
    ramp = np.where(disk, 2.0 * xx, -1000.0)  # 2 HU per pixel of 0.5 mm: 4 HU/mm
    mask = body_mask(ramp)
    assert mask.sum() == disk.sum()
    g = gradient_percentiles(ramp, 0.5, mask)
    assert g["p50"] == pytest.approx(4.0) and g["p99"] == pytest.approx(4.0)
    flat = np.where(disk, 40.0, -1000.0)
    rois = soft_tissue_rois(flat, 0.5, size_mm=20)
    assert rois and all(r.shape == (40, 40) and (r == 40).all() for r in rois)
    assert len(rois) == 5  # of the 40-pixel tiles, the centre one and its four neighbours lie inside the disk
    with_table = np.where(disk, 40.0, -1000.0)
    with_table[190:, :] = 200.0  # a table below the patient, apart from it
    assert body_mask(with_table).sum() == disk.sum()


def test_fine_sd_of_white_noise_is_its_analytic_high_pass_share_and_of_smooth_tissue_nothing():
    """White noise of sd s on the 1 mm grid, less its Gaussian blur (sigma g pixels): s sqrt(1 - 2 G(0) + sum G^2),
    with G(0) = 1 / (2 pi g^2) and sum G^2 = 1 / (4 pi g^2); a smooth field inside soft tissue gives next to none,
    and a coarser pixel reads the same noise field once it is resampled."""
    yy, xx = np.mgrid[:300, :300]
    disk = (yy - 150) ** 2 + (xx - 150) ** 2 < 140**2
    noise = np.random.default_rng(0).normal(0, 10.0, disk.shape)
    g = FINE_SIGMA_MM / 1.0
    analytic = 10.0 * np.sqrt(1 - 2 / (2 * np.pi * g**2) + 1 / (4 * np.pi * g**2))
    assert fine_sd(np.where(disk, 40.0 + noise, -1000.0), 1.0, disk) == pytest.approx(analytic, rel=0.02)
    smooth = 40.0 + 20.0 * np.sin(xx / 40.0)
    assert fine_sd(np.where(disk, smooth, -1000.0), 1.0, disk) < 0.05
    assert fine_sd(np.where(disk, smooth, -1000.0), 0.5, disk) < 0.1  # the same field at another pixel size
    assert np.isnan(fine_sd(np.full((50, 50), 500.0), 1.0, np.ones((50, 50), bool)))  # no soft tissue: no answer


def _inv3(path: Path, volume: np.ndarray, spacing, dtype="int16") -> Path:
    main = {"matrix": {"dtype": dtype, "filename": "matrix.dat", "shape": list(volume.shape)},
            "spacing": list(spacing), "modality": "CT"}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("main.plist", plistlib.dumps(main)),
                           ("matrix.dat", volume.astype({"int16": "<i2", "uint16": "<u2"}[dtype]).tobytes())):
            info = tarfile.TarInfo(f"tmpabc/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.tuples(st.integers(1, 4), st.integers(2, 9), st.integers(2, 9)),
       spacing=st.tuples(*[st.floats(0.1, 5.0)] * 3), seed=st.integers(0, 2**16))
def test_read_inv3_gives_back_the_volume_anterior_up_and_its_spacing(tmp_path_factory, shape, spacing, seed):
    volume = np.random.default_rng(seed).integers(-1024, 3000, shape)
    path = _inv3(tmp_path_factory.mktemp("inv") / "v.inv3", volume, spacing)
    read, (dz, dy, dx) = read_inv3(path)
    assert np.array_equal(read, volume[:, ::-1, :]) and (dz, dy, dx) == pytest.approx(spacing[::-1])


@pytest.mark.parametrize("damage", ["not a tar", "no plist", "short matrix", "bad dtype", "huge shape"])
def test_a_damaged_inv3_is_one_sentence(tmp_path, damage):
    path = tmp_path / "v.inv3"
    volume = np.zeros((2, 4, 4))
    if damage == "not a tar":
        path.write_bytes(b"hello")
    elif damage == "no plist":
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo("x/matrix.dat")
            tar.addfile(info, io.BytesIO(b""))
    else:
        _inv3(path, volume, (1, 1, 1))
        if damage != "short matrix":
            main = {"matrix": {"dtype": "complex" if damage == "bad dtype" else "int16", "filename": "matrix.dat",
                               "shape": [2, 4, 99999] if damage == "huge shape" else [2, 4, 4]}, "spacing": [1, 1, 1]}
        else:
            main = {"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": [3, 4, 4]}, "spacing": [1, 1, 1]}
        with tarfile.open(path, "w:gz") as tar:
            for name, data in (("main.plist", plistlib.dumps(main)), ("matrix.dat", volume.astype("<i2").tobytes())):
                info = tarfile.TarInfo(f"x/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=str(path)):
        read_inv3(path)


def test_the_volume_written_as_dicom_imports_as_a_head_series(tmp_path):
    from ldct_bench.data.dicom_import import import_dataset

    yy, xx = np.mgrid[:64, :64]
    head = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 28**2, 35.0, -1024.0)
    files = write_dicom(np.stack([head, head + 5]), (1.5, 0.9, 0.9), tmp_path / "dcm")
    back = pydicom.dcmread(files[1])
    assert back.Modality == "CT" and float(back.PixelSpacing[0]) == pytest.approx(0.9)
    assert np.array_equal(back.pixel_array * float(back.RescaleSlope) + float(back.RescaleIntercept), head + 5)
    ds = import_dataset(tmp_path / "dcm", name="cranium", extra_doses=(0.25,), cache_dir=tmp_path / "c")
    assert ds.anatomies == ["head"] and ds.pixel_mm == {"Cranium": pytest.approx(0.9)} and 0.25 in ds.doses("head")


@pytest.mark.skipif(not CRANIUM.is_file(), reason="Cranium.inv3 not fetched (bash scripts/fetch_cranium.sh)")
def test_the_real_head_volume_reads_as_an_axial_head_ct():
    volume, spacing = read_inv3(CRANIUM)
    assert volume.shape == (108, 256, 256) and spacing == pytest.approx((1.5, 0.95703, 0.95703), abs=1e-4)
    assert volume.min() == -1024 and volume.max() > 2000
    mid = volume[54]
    brain = mid[(mid > 10) & (mid < 60)]
    assert brain.size > 10_000 and 20 <= np.median(brain) <= 45  # brain parenchyma in an axial slice
    rest = np.argwhere((mid > 300) & ~body_mask(mid))  # the head rest's arc, behind the head
    assert len(rest) > 100 and rest[:, 0].mean() > 160  # posterior at the bottom: anterior up


def _head_stack(radii: list[float], air: list[bool]) -> np.ndarray:
    yy, xx = np.mgrid[:160, :160]
    r = np.hypot(yy - 80, xx - 80)
    stack = np.where(r[None] < np.array(radii)[:, None, None], 30.0, -1000.0)
    for k, holed in enumerate(air):
        if holed:  # a sinus: an air pocket inside the head, 3 % of its section
            stack[k][(np.abs(yy - 80) < 6) & (np.abs(xx - 80) < 0.03 * np.pi * radii[k] ** 2 / 12)] = -1000.0
    return stack


@pytest.mark.parametrize("reverse", [False, True])
def test_cerebral_levels_lie_above_the_air_cells_while_the_head_is_wide(reverse):
    radii = [60, 66, 70, 70, 70, 69, 67, 64, 61, 40, 15]  # neck, skull base, cerebrum, vertex
    air = [False, True, True, False, False, False, False, False, False, False, False]
    # sections >= 80 % of the widest (r >= 62.6): slices 3-8; the air-free neck below the sinuses is not cerebrum
    stack = _head_stack(radii, air)
    expected = [3, 4, 5, 6, 7]
    if reverse:
        stack, expected = stack[::-1], sorted(len(radii) - 1 - i for i in expected)
    assert cerebral_levels(stack) == expected
    assert cerebral_levels(_head_stack(radii, [False] * len(radii))) == [1, 2, 3, 4, 5, 6, 7]
    assert cerebral_levels(_head_stack([60, 60], [True, True])) == []


def test_the_phantom_heads_stay_wider_than_the_cerebral_share():
    """Every phantom head slice is at least AREA_SHARE of its widest section: the levels compared are the same."""
    from ldct_bench.data.phantoms import phantom_slice

    def section(seed, z, layered):
        skin = phantom_slice("head", seed, z, True, True, layered)[0]
        return skin.a * skin.b

    for seed in range(5):
        for layered in (False, True):
            assert section(seed, 0.5 + 0.12, layered) / section(seed, 0.0, layered) >= AREA_SHARE


@pytest.mark.skipif(not CRANIUM.is_file(), reason="Cranium.inv3 not fetched (bash scripts/fetch_cranium.sh)")
def test_the_real_heads_cerebral_levels_are_one_run_above_its_sinuses():
    levels = cerebral_levels(read_inv3(CRANIUM)[0])
    assert levels == list(range(levels[0], levels[-1] + 1)) and 60 <= levels[0] and levels[-1] <= 85, levels
    assert len(levels) >= 8


def test_the_head_field_holds_every_phantom_head():
    """The field realism compares heads through holds the widest head a patient seed makes (its outline, at its widest
    slice, before the tilt, which turns it about the isocentre)."""
    from ldct_bench.data.acquisition import HEAD_FIELD
    from ldct_bench.data.phantoms import outline

    for layered in (False, True):  # the clinical model's scalp, and clinical2's layers
        reach = max(max(outline("head", seed, layered)) for seed in range(2000))
        assert 125 < reach < HEAD_FIELD.geometry.fov_mm / 2 < reach + 10, (layered, reach)


def test_realistic_phantoms_land_in_the_real_slices_range_and_ellipses_do_not(tmp_path):
    """A fresh small sample of noiseless heads through the head field (0.55 mm): the realistic anatomy's body
    power-spectrum slope lies in the range of the real head slices pydicom ships, and its edge sharpness (gradient
    p90) in the range of all three real slices; the ellipse model's gradients fall below it (too few edges)."""
    from ldct_bench.data.acquisition import HEAD_FIELD
    from ldct_bench.data.dataset import LDCTDataset, PhantomConfig

    real = {}
    for name in ("693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "CT_small.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name))
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        real[name] = measure([np.maximum(hu, -1024.0)], float(ds.PixelSpacing[0]))
    heads = [m["beta_body"] for n, m in real.items() if n != "CT_small.dcm"]
    gradients = [m["gradient"]["p90"] for m in real.values()]
    phantom = {}
    # two heads of the realistic model (its body beta lies 0.11 inside the bound; one head alone came within 0.02),
    # one of the ellipses, whose gradients lie far below the real range (p90 80 against 127 HU/mm)
    for model, splits in (("ellipses", ("test",)), ("realistic", ("train", "test"))):
        config = replace(PhantomConfig.sized(512, 2, 2), anatomy_model=model,
                         simulator=HEAD_FIELD.simulator(512).to_dict())
        ds = LDCTDataset.embedded(config, anatomies=["head"], splits=splits, cache_dir=tmp_path, progress=False)
        truth = [ds.volume("head", p, "truth") for p in ds.patients("head", splits)]  # no low dose is needed
        phantom[model] = measure([s.astype(np.float64) for v in truth for s in v], float(ds.pixel_mm))
    realistic, ellipses = phantom["realistic"], phantom["ellipses"]
    print({n: (round(m["beta_body"], 3), round(m["gradient"]["p90"], 1)) for n, m in {**real, **phantom}.items()})
    assert min(heads) - 0.25 <= realistic["beta_body"] <= max(heads) + 0.1, (realistic["beta_body"], heads)
    assert min(gradients) <= realistic["gradient"]["p90"] <= max(gradients), (realistic["gradient"], gradients)
    assert ellipses["gradient"]["p90"] < min(gradients), (ellipses["gradient"], gradients)
