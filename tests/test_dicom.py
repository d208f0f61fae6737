"""DICOM import on files the tests write themselves (and pydicom's bundled CT slice)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from click.testing import CliRunner
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ldct_bench.cli import main
from ldct_bench.data.dicom_import import import_dataset, import_summary, read_hu


def write_ct(path, hu: np.ndarray, patient="L001", series_uid=None, z=0.0, description="", rescale=True, spacing=1.0,
             **tags):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.SeriesDescription = "CT", patient, description
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.ImagePositionPatient = [0.0, 0.0, float(z)]
    ds.PixelSpacing = [spacing, spacing]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.clip(hu + 1024, 0, 65535).astype(np.uint16).tobytes()
    for tag, value in tags.items():  # BodyPartExamined, StudyDescription, ...
        setattr(ds, tag, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def mayo2016_tree(root, patients=("L001", "L002", "L003"), n=3, size=32, extra_full=True):
    rng = np.random.default_rng(0)
    truth = {}
    for p in patients:
        fs, qs = generate_uid(), generate_uid()
        for i in range(n):
            full = rng.normal(40, 10, (size, size)).round()
            low = full + rng.normal(0, 30, (size, size)).round()
            truth[(p, i)] = (full, low)
            write_ct(root / p / "full_1mm" / f"{i}.dcm", full, p, fs, z=-i * 1.0)
            write_ct(root / p / "quarter_1mm" / f"{i}.dcm", low, p, qs, z=-i * 1.0)
        if extra_full:  # a slice with no quarter-dose partner
            write_ct(root / p / "full_1mm" / "extra.dcm", np.zeros((size, size)), p, fs, z=5.0)
    return truth


def test_hu_conversion_on_pydicom_ct_file():
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expect = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(read_hu(path), expect.astype(np.float32))
    assert -1100 < read_hu(path).min() and read_hu(path).max() < 3100


def test_mayo2016_pairing_and_patient_split(tmp_path):
    truth = mayo2016_tree(tmp_path / "src")
    ds = import_dataset(tmp_path / "src", source="mayo2016", cache_dir=tmp_path / "cache")
    assert ds.manifest["unpaired_slices"] == 3  # one extra full-dose slice per patient
    assert ds.patients("abdomen", "test") == ["L003"] and ds.patients("abdomen", "train") == ["L001", "L002"]
    full, low = ds.volume("abdomen", "L002", "full"), ds.volume("abdomen", "L002", "d0.2500")
    # slices are ordered by table position (z = 0, -1, -2 -> sorted ascending: -2, -1, 0)
    for k, i in enumerate((2, 1, 0)):
        np.testing.assert_array_equal(full[k], truth[("L002", i)][0])
        np.testing.assert_array_equal(low[k], truth[("L002", i)][1])
    pairs = ds.pairs(["abdomen"], [0.25], "test")
    assert len(pairs) == 3 and ds.manifest["vendor_doses"]["L003"] == 0.25


def test_extra_dose_is_simulated_from_full_dose(tmp_path):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    body = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2, 40.0, -1000.0)
    for i in range(2):
        write_ct(tmp_path / "src" / "P1" / f"{i}.dcm", body + rng.normal(0, 5, body.shape).round(), "P1", "1.2.3",
                 z=i, spacing=4.0)
    ds = import_dataset(tmp_path / "src", source="dicom", cache_dir=tmp_path / "cache", extra_doses=(0.1,),
                        anatomy="abdomen")
    full, low = ds.volume("abdomen", "P1", "full"), ds.volume("abdomen", "P1", "d0.1000")
    inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 15**2
    assert abs(low[0][inside].mean() - full[0][inside].mean()) < 10  # same anatomy
    assert (low[0] - full[0])[inside].std() > 5  # more noise


def test_anatomy_comes_from_the_headers_or_from_anatomy(tmp_path):
    """BodyPartExamined first, then the descriptions; a series that names no region (or two) stops the import with
    one sentence asking for --anatomy, and --anatomy names every series."""
    from ldct_bench.data.dicom_import import anatomy_from_headers

    body = np.zeros((32, 32))
    write_ct(tmp_path / "src" / "A" / "0.dcm", body, "A", BodyPartExamined="ABDOMEN")
    write_ct(tmp_path / "src" / "H" / "0.dcm", body, "H", StudyDescription="CT HEAD W/O CONTRAST")
    write_ct(tmp_path / "src" / "C" / "0.dcm", body, "C", BodyPartExamined="CHESTABDOMEN", ProtocolName="Thorax 1mm")
    ds = import_dataset(tmp_path / "src", source="dicom", name="h", cache_dir=tmp_path / "c")
    found = {a: [p for s in ("train", "val", "test") for p in ds.patients(a, s)] for a in ds.anatomies}
    assert found == {"abdomen": ["A"], "chest": ["C"], "head": ["H"]}
    write_ct(tmp_path / "src" / "X" / "0.dcm", body, "X", SeriesDescription="CHEST ABDOMEN PELVIS")
    with pytest.raises(ValueError, match=r"patient X .* names no body region we know \(SeriesDescription "
                                         r"'CHEST ABDOMEN PELVIS'\); give --anatomy head, chest or abdomen"):
        import_dataset(tmp_path / "src", source="dicom", name="x", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "x").exists()
    forced = import_dataset(tmp_path / "src", source="dicom", name="x", cache_dir=tmp_path / "c", anatomy="head")
    assert forced.anatomies == ["head"]
    assert anatomy_from_headers(type("D", (), {"BodyPartExamined": "BRAIN"})()) == "head"


def test_run_on_an_imported_folder_takes_its_anatomies_and_doses(tmp_path):
    """The issue's must-show: an abdomen slice (BodyPartExamined), a head slice (its study description) and an
    enhanced multi-frame chest CT import with the right anatomies, and `run --methods ldct --data it` needs no
    --anatomies or --train-doses: it scores the doses the dataset holds on every patient (one patient per anatomy
    cannot be split, so methods would come from the embedded phantoms) and says what it chose."""
    from click.testing import CliRunner

    from ldct_bench.cli import main

    yy, xx = np.mgrid[:64, :64]
    body = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2, 40.0, -1000.0)
    write_ct(tmp_path / "src" / "a.dcm", body, "ABD1", BodyPartExamined="ABDOMEN", spacing=4.0)
    write_ct(tmp_path / "src" / "h.dcm", body, "HEAD1", StudyDescription="CT Brain routine", spacing=3.0)
    write_enhanced_ct(tmp_path / "src" / "e.dcm", np.stack([body, body]), zs=[0.0, 4.0], spacing=4.0,
                      BodyPartExamined="CHEST")  # patient E1
    cache, run = tmp_path / "cache", tmp_path / "run"
    res = CliRunner().invoke(main, ["data", "import", "--source", "dicom", "--root", str(tmp_path / "src"), "--name",
                                    "mine", "--doses", "25", "--cache-dir", str(cache)])
    assert res.exit_code == 0, res.output
    assert "abdomen: 1 patient(s), 1 slice(s), doses 25%" in res.output and "chest: 1 patient(s), 2 slice(s)" in res.output
    res = CliRunner().invoke(main, ["run", "--methods", "ldct", "--data", "mine", "--cache-dir", str(cache),
                                    "--out", str(run)])
    assert res.exit_code == 0, res.output
    assert "evaluating the doses it holds, 25%" in res.output and "--train-data embedded" in res.output
    table = pd.read_parquet(run / "results.parquet")
    assert set(table["anatomy"]) == {"abdomen", "chest", "head"} and set(table["dose"]) == {0.25}
    assert set(table["patient"]) == {"ABD1", "E1", "HEAD1"} and not table["seen_data"].any()
    assert "enhanced" not in res.output and "skipped" not in res.output


def test_the_seen_set_nobody_chose_alternates_from_the_highest_dose():
    from ldct_bench.data.resolve import alternate_seen

    assert alternate_seen((0.05, 0.1, 0.25, 0.5)) == (0.1, 0.5)  # the default protocol
    assert alternate_seen((0.1, 0.25)) == (0.25,) and alternate_seen((0.25,)) == (0.25,)


@pytest.mark.parametrize("syntax", ["RLELossless", "JPEG2000Lossless"])
def test_compressed_slices_import_as_their_uncompressed_originals(syntax, tmp_path):
    """Every compressed transfer syntax pydicom decodes with the declared plugins: a lossless copy imports to the
    same HU as the original."""
    import pydicom
    import pydicom.uid

    rng = np.random.default_rng(3)
    body = rng.normal(40, 30, (32, 32)).round()
    write_ct(tmp_path / "plain" / "0.dcm", body, "P", BodyPartExamined="CHEST")
    ds = pydicom.dcmread(tmp_path / "plain" / "0.dcm")
    ds.compress(getattr(pydicom.uid, syntax))
    (tmp_path / "packed").mkdir()
    ds.save_as(tmp_path / "packed" / "0.dcm")
    assert pydicom.dcmread(tmp_path / "packed" / "0.dcm").file_meta.TransferSyntaxUID.is_compressed
    plain = import_dataset(tmp_path / "plain", name="plain", cache_dir=tmp_path / "c")
    packed = import_dataset(tmp_path / "packed", name="packed", cache_dir=tmp_path / "c")
    assert np.array_equal(plain.volume("chest", "P", "full"), packed.volume("chest", "P", "full"))


def write_enhanced_ct(path, frames: np.ndarray, zs, spacing=2.0, intercepts=None, **tags):
    """An Enhanced CT Image Storage file: position per frame, spacing shared, rescale per frame (as scanners do)."""
    from pydicom.uid import EnhancedCTImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = EnhancedCTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedCTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.SeriesInstanceUID = "CT", "E1", generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = frames.shape[1], frames.shape[2], len(frames)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    measures = Dataset()
    measures.PixelSpacing = [spacing, spacing]
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    intercepts = intercepts or [-1024.0] * len(frames)
    per_frame, stored = [], []
    for hu, z, b in zip(frames, zs, intercepts):
        pos, rescale, group = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, float(z)]
        rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, b, "HU"
        group.PlanePositionSequence, group.PixelValueTransformationSequence = [pos], [rescale]
        per_frame.append(group)
        stored.append(np.clip(hu - b, 0, 65535).astype(np.uint16))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(stored).tobytes()
    for tag, value in tags.items():
        setattr(ds, tag, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_multiframe_ct_imports_frame_by_frame(tmp_path):
    """Rescale and position per frame from the functional groups (not skipped as 'without RescaleSlope'); frames are
    ordered by table position like single-frame slices."""
    rng = np.random.default_rng(5)
    frames = rng.normal(0, 50, (3, 32, 32)).round()
    write_enhanced_ct(tmp_path / "src" / "e.dcm", frames, zs=[10.0, 0.0, 5.0], intercepts=[-1024.0, -1000.0, -1024.0],
                      BodyPartExamined="HEAD")
    ds = import_dataset(tmp_path / "src", name="enh", cache_dir=tmp_path / "c")
    assert ds.manifest["skipped"] == {} and ds.anatomies == ["head"]
    patient = [p for s in ("train", "val", "test") for p in ds.patients("head", s)][0]
    np.testing.assert_array_equal(ds.volume("head", patient, "full"), frames[[1, 2, 0]].astype(np.float32))
    assert ds.manifest["pixel_mm"][patient] == 2.0


def test_denoise_writes_one_dicom_per_slice_with_the_source_geometry(tmp_path):
    """The issue's must-show: `ldct-bench denoise --method redcnn --in D --out O` with the committed checkpoint; a
    re-run finds the series done; bad input is one sentence."""
    import pydicom
    from click.testing import CliRunner

    from ldct_bench.cli import main

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:64, :64]
    body = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2, 40.0, -1000.0)
    for i in range(3):
        write_ct(tmp_path / "D" / f"{i}.dcm", body + rng.normal(0, 40, body.shape).round(), "P9", "1.2.9", z=2.5 * i,
                 spacing=1.5)
    args = ["denoise", "--method", "redcnn", "--in", str(tmp_path / "D"), "--out", str(tmp_path / "O")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    written = sorted((tmp_path / "O").rglob("*.dcm"))
    assert len(written) == 3
    sources = {float(pydicom.dcmread(p).ImagePositionPatient[2]): pydicom.dcmread(p) for p in (tmp_path / "D").glob("*")}
    for path in written:
        out = pydicom.dcmread(path)
        src = sources[float(out.ImagePositionPatient[2])]
        assert (out.Rows, out.Columns, list(out.PixelSpacing)) == (src.Rows, src.Columns, list(src.PixelSpacing))
        assert out.SeriesInstanceUID != src.SeriesInstanceUID and out.PatientID == "P9"
        assert list(out.ImageType) == ["DERIVED", "SECONDARY"] and "redcnn" in out.SeriesDescription
        assert "checkpoint" in out.DerivationDescription
        hu = out.pixel_array * float(out.RescaleSlope) + float(out.RescaleIntercept)
        noisy = src.pixel_array * float(src.RescaleSlope) + float(src.RescaleIntercept)
        inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 15**2
        assert hu[inside].std() < noisy[inside].std()  # denoised
    assert len({pydicom.dcmread(p).SeriesInstanceUID for p in written}) == 1
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "0 series written" in again.output and "1 already there" in again.output
    bad = CliRunner().invoke(main, ["denoise", "--method", "redcnn", "--in", str(tmp_path / "none"), "--out", "x"])
    assert bad.exit_code != 0 and "does not exist" in bad.output and "Traceback" not in bad.output


def test_every_compressed_syntax_the_issue_names_has_a_decoder():
    """JPEG 2000, JPEG-LS, JPEG lossless (process 14) and baseline, RLE: the declared pylibjpeg plugins decode them."""
    import pydicom.uid as uid

    from ldct_bench.data.dicom_import import _decodable

    for syntax in (uid.JPEG2000, uid.JPEG2000Lossless, uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEGLosslessSV1,
                   uid.JPEGLossless, uid.JPEGBaseline8Bit, uid.RLELossless):
        assert _decodable(syntax), syntax.name


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty"):
        import_dataset(tmp_path / "empty", cache_dir=tmp_path / "c")


def test_non_dicom_files_only(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("hello")
    (tmp_path / "src" / "image.png").write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match=r"no usable CT slices .*2 non-DICOM files"):
        import_dataset(tmp_path / "src", cache_dir=tmp_path / "c")


def test_mixed_slice_sizes(tmp_path):
    write_ct(tmp_path / "src" / "P1" / "a.dcm", np.zeros((32, 32)), "P1", "1.2.3", z=0)
    write_ct(tmp_path / "src" / "P1" / "b.dcm", np.zeros((16, 16)), "P1", "1.2.3", z=1)
    with pytest.raises(ValueError, match="mixes slice sizes"):
        import_dataset(tmp_path / "src", cache_dir=tmp_path / "c", anatomy="abdomen")
    assert not list((tmp_path / "c").rglob("*.npy"))


def test_missing_rescale_and_unreadable_files_are_counted_and_skipped(tmp_path):
    mayo2016_tree(tmp_path / "src", patients=("L001", "L002"), extra_full=False)
    write_ct(tmp_path / "src" / "L001" / "full_1mm" / "norescale.dcm", np.zeros((32, 32)), "L001", z=9, rescale=False)
    good = (tmp_path / "src" / "L001" / "full_1mm" / "0.dcm").read_bytes()
    (tmp_path / "src" / "L001" / "full_1mm" / "truncated.dcm").write_bytes(good[:-300])  # cut inside the pixels
    (tmp_path / "src" / "L001" / "full_1mm" / "header_only.dcm").write_bytes(good[:200])
    ds = import_dataset(tmp_path / "src", source="mayo2016", cache_dir=tmp_path / "c")
    skipped = ds.manifest["skipped"]
    assert skipped["slices without RescaleSlope/RescaleIntercept"] == 1
    assert skipped["unreadable files"] == 1 and skipped["files without pixel data"] == 1
    summary = import_summary(ds)  # what `data import` prints: by reason, naming the files
    assert f"skipped 1 slices without RescaleSlope/RescaleIntercept: {tmp_path / 'src' / 'L001' / 'full_1mm'}" in summary
    assert "norescale.dcm" in summary and "truncated.dcm (truncated pixel data)" in summary
    assert "abdomen: 2 patient(s)" in summary
    assert ds.volume("abdomen", "L001", "full").shape == (3, 32, 32)


def test_cli_import_bad_root_is_one_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["data", "import", "--source", "mayo2016", "--root", str(tmp_path / "nope"),
                                    "--cache-dir", str(tmp_path / "c")])
    assert res.exit_code != 0 and "does not exist" in res.output and "Traceback" not in res.output


def test_save_images_writes_dicom_series_with_the_source_headers(tmp_path):
    from ldct_bench.config import RunConfig
    from ldct_bench.protocol import Protocol
    from ldct_bench.runner import run_matrix

    truth = mayo2016_tree(tmp_path / "src", n=2)
    ds = import_dataset(tmp_path / "src", source="mayo2016", cache_dir=tmp_path / "cache", extra_doses=(0.1,))
    out = tmp_path / "run"
    config = RunConfig(methods=("ldct",), out=out, protocol=Protocol((0.25, 0.1), (0.25,), ("abdomen",)),
                       data=str(ds.root), cache_dir=tmp_path / "cache", save_images=True)
    run_matrix(config, progress=False, echo=lambda *a: None)
    quarter = sorted((out / "images" / "ldct" / "abdomen_0.2500" / "L003").glob("*.dcm"))
    assert len(quarter) == 2
    written = [pydicom.dcmread(p) for p in quarter]
    source = pydicom.dcmread(tmp_path / "src" / "L003" / "quarter_1mm" / "0.dcm")
    assert len({d.SeriesInstanceUID for d in written}) == 1 and written[0].SeriesInstanceUID != source.SeriesInstanceUID
    assert len({d.SOPInstanceUID for d in written}) == 2 and source.SOPInstanceUID not in {d.SOPInstanceUID for d in written}
    assert written[0].PatientID == "L003" and "ldct" in written[0].SeriesDescription
    assert list(written[0].ImageType) == ["DERIVED", "SECONDARY"]
    for k, i in enumerate((1, 0)):  # the identity 'method' gives back each quarter-dose slice, in table order
        np.testing.assert_array_equal(read_hu(quarter[k]), truth[("L003", i)][1])
        assert float(written[k].ImagePositionPatient[2]) == -i
    # a simulated dose takes its headers from the full-dose slice it was made from
    tenth = pydicom.dcmread(out / "images" / "ldct" / "abdomen_0.1000" / "L003" / "0000.dcm")
    assert tenth.SeriesDescription.startswith("ldct-bench ldct") and "10%" in tenth.SeriesDescription
    np.testing.assert_allclose(read_hu(out / "images" / "ldct" / "abdomen_0.1000" / "L003" / "0000.dcm"),
                               ds.volume("abdomen", "L003", "d0.1000")[0].round(), atol=0.5)
    # and as float32 arrays, read back by the store, indexed by patient and slice
    from ldct_bench.results import RunStore
    saved = RunStore(out).images("ldct", "abdomen", 0.1)
    assert RunStore(out).images("ldct", "abdomen", 0.5) is None
    rows = np.flatnonzero(saved["patient"] == "L003")
    np.testing.assert_array_equal(saved["images"][rows], ds.volume("abdomen", "L003", "d0.1000")[saved["slice"][rows]])


def test_doses_inserted_into_a_real_scan_are_fractions_of_its_own_flux(tiny_dataset, tmp_path):
    """A scan noisier than the simulator's full dose had less flux: its flux is read from its noise (scan_flux, within
    20 % of the flux it was made at) and recorded, and its 25 % is then as noisy, against its full dose, as a scan at
    a quarter of that flux (within 15 %); a quieter scan keeps the simulator's flux."""
    from ldct_bench.data.dicom_import import import_dataset, scan_flux
    from ldct_bench.data.geometry import FanBeamGeometry
    from ldct_bench.data.noise import NoiseModel
    from ldct_bench.data.simulate import Simulator, dose_key
    from ldct_bench.toolkit import estimate_noise_sd

    patient = tiny_dataset.patients("abdomen", "test")[0]
    truth = tiny_dataset.volume("abdomen", patient, "truth")[2:3]  # one slice: each reprojection costs seconds
    n = truth.shape[-1]
    pixel = tiny_dataset.pixel_mm
    geometry = FanBeamGeometry.covering(n, pixel * n)

    images = [torch.from_numpy(t.copy()) for t in truth]
    projected = [Simulator(geometry).reproject(t) for t in images]

    def scanned(flux, dose=1.0):  # dose/(1+dose) of `flux` into the noiseless image: the noise of dose x flux
        sim = Simulator(geometry, NoiseModel(i0=NoiseModel().i0 * flux))
        return np.stack([sim.lower_dose(t, [dose / (1 + dose)], [i], p)[0].numpy()
                         for i, (t, p) in enumerate(zip(images, projected))])

    fd = scanned(1 / 8)
    assert scan_flux(Simulator(geometry), scanned(4.0), 99) == 1.0
    assert scan_flux(Simulator(geometry), truth, 99) == 1.0  # no noise at all: nothing to read
    for i, s in enumerate(fd):
        write_ct(tmp_path / "D" / f"{i}.dcm", np.round(s), "P", "1.2.5", z=i, spacing=pixel)
    ds = import_dataset(tmp_path / "D", name="noisy", extra_doses=(0.25,), cache_dir=tmp_path / "c", anatomy="abdomen")
    assert ds.manifest["flux"]["P"] == pytest.approx(1 / 8, rel=0.2)
    full, quarter = (ds.volume("abdomen", "P", k) for k in ("full", dose_key(0.25)))
    ratio = np.mean([estimate_noise_sd(q) / estimate_noise_sd(f) for q, f in zip(quarter, full)])
    made = np.mean([estimate_noise_sd(q) / estimate_noise_sd(f) for q, f in zip(scanned(1 / 8, 0.25), fd)])
    assert ratio == pytest.approx(made, rel=0.15) and ratio > 1.8  # about 2 (nested), more with electronic noise


def test_padding_outside_the_reconstruction_circle_is_read_as_air(tmp_path):
    """PixelPaddingValue (-2000 here) is no CT number: the import reads it as -1024 HU, in the full dose and in every
    dose made from it, so no model meets a cliff at the circle's rim."""
    yy, xx = np.mgrid[:64, :64]
    hu = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 30**2, np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 20**2, 40.0,
                                                                     -1000.0), -2000.0)
    for i in range(2):  # stored with a -3024 intercept, so that -2000 can be written
        write_ct(tmp_path / "D" / f"{i}.dcm", hu + 2000, "P", "1.2.6", z=i, spacing=2.0, RescaleIntercept=-3024)
    assert read_hu(tmp_path / "D" / "0.dcm").min() == -2000
    ds = import_dataset(tmp_path / "D", name="padded", extra_doses=(0.25,), cache_dir=tmp_path / "c", anatomy="head")
    full = ds.volume("head", "P", "full")
    assert full.min() == -1024 and np.all(full[:, hu < -1024] == -1024) and np.all(full[:, hu == 40] == 40)
    assert ds.volume("head", "P", "d0.2500").min() > -1500  # no -2000 cliff survives into the lower dose


def test_each_inserted_slice_has_the_bits_it_gets_alone_whatever_part_it_was_reprojected_in(monkeypatch):
    """data import reprojects a scan's slices in parts, the middle slice's part first (its line integrals also give
    the flux): every slice's inserted doses are those it gets alone at the scan's flux, each seeded by its index."""
    from dataclasses import replace

    from ldct_bench.data import dicom_import
    from ldct_bench.data.geometry import FanBeamGeometry
    from ldct_bench.data.simulate import Simulator, noise_seed

    monkeypatch.setattr(dicom_import, "REPROJECT_TOGETHER", 3)  # 7 slices: parts 3-5 (the middle's), 0-2, then 6
    yy, xx = np.mgrid[:32, :32]
    disk = np.where(np.hypot(yy - 15.5, xx - 15.5) < 12, 40.0, -1000.0)
    noise = np.random.default_rng(0).normal(0, 30, (7, 32, 32))
    volume = (disk + noise + 10.0 * np.arange(7)[:, None, None]).astype(np.float32)
    doses = [0.25, 0.5]
    flux, got = dicom_import._inserted_doses(volume, 2.0, doses, 3, "p")
    sim = Simulator(FanBeamGeometry.covering(32, 64.0))
    assert flux == dicom_import.scan_flux(sim, volume, noise_seed(3, "p", "flux"))
    sim = replace(sim, noise=replace(sim.noise, i0=sim.noise.i0 * flux))
    assert sorted(got) == ["d0.2500", "d0.5000"] and all(a.shape == volume.shape for a in got.values())
    for i, s in enumerate(torch.from_numpy(volume)):
        alone = sim.lower_dose(s, doses, [noise_seed(3, "p", i, d) for d in doses], sim.reproject(s))
        assert np.array_equal(got["d0.2500"][i], alone[0].numpy()) and np.array_equal(got["d0.5000"][i], alone[1].numpy())
    assert not np.array_equal(got["d0.2500"][2], got["d0.2500"][3])
