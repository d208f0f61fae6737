"""Import real CT data from DICOM into the dataset layout (see dataset.py).

* mayo2016 — AAPM-Mayo 2016 Low Dose CT Grand Challenge: per patient (L067, ...) a full-dose
  and a quarter-dose (25 %) series, told apart by "full"/"quarter" (or FD/QD) in the folder
  name or SeriesDescription; all abdomen.
* mayo2020 — TCIA "LDCT-and-Projection-data": "Full Dose Images" / "Low Dose Images" series;
  the anatomy and the vendor's low dose follow the patient prefix: L... abdomen (25 %),
  C... chest (10 %), N... head (25 %).
* dicom — any full-dose CT series; only simulated doses are made from it.

Pixels become HU with RescaleSlope/Intercept; slices are ordered and paired by
ImagePositionPatient; patients are split train/val/test by sorted ID. Extra doses are
simulated from the full-dose slices with the suite's simulator (reprojection + Yu et al.
noise insertion) at the flux the scan's own noise implies (`scan_flux`): a dose is a fraction of
that scan's dose. Bad files are counted and skipped with a reason; bad series raise one clear
error.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..atomic import atomic_save_npy, atomic_write_json
from ..conventions import CT_MIN_HU, is_plain_name, safe
from ..toolkit import estimate_noise_sd
from .dataset import DATA_VERSION, SPLITS, LDCTDataset, default_cache_dir, sha256_file
from .geometry import FanBeamGeometry
from .simulate import Simulator, dose_key, noise_seed

MAYO2020_ANATOMY = {"L": ("abdomen", 0.25), "C": ("chest", 0.10), "N": ("head", 0.25)}
REPROJECT_TOGETHER = 8  # slices per projector call where doses are inserted: ~55 MB of float64 sinograms at 512^2
# A series' body region from its headers: BodyPartExamined (DICOM PS3.16 Annex L defined terms) first, then the
# words of StudyDescription, ProtocolName and SeriesDescription. A header naming two regions ("CHEST ABDOMEN
# PELVIS") says nothing; then the next one is read, and with none left the import asks for --anatomy.
BODY_PARTS = {
    "head": ("HEAD", "BRAIN", "SKULL", "CRANIUM", "NEURO", "NEUROCRANIUM"),
    "chest": ("CHEST", "THORAX", "THORACIC", "LUNG", "LUNGS", "PULMONARY"),
    "abdomen": ("ABDOMEN", "ABD", "ABDOMINAL", "ABDOMENPELVIS", "PELVIS", "LIVER", "KIDNEY", "RENAL", "PANCREAS"),
}
ANATOMY_TAGS = ("BodyPartExamined", "StudyDescription", "ProtocolName", "SeriesDescription")


def anatomy_from_headers(ds) -> str | None:
    """The body region a slice's headers name unambiguously (see BODY_PARTS), or None."""
    for tag in ANATOMY_TAGS:
        words = set(re.findall(r"[A-Z]+", str(getattr(ds, tag, "") or "").upper()))
        named = [a for a, keys in BODY_PARTS.items() if words & set(keys)]
        if len(named) == 1:
            return named[0]
    return None


@dataclass
class SliceRecord:
    path: Path
    patient: str
    series: str
    kind: str  # "full" or "low"
    z: float
    shape: tuple
    pixel_mm: float
    anatomy: str | None = None  # what its headers say (anatomy_from_headers)
    headers: str = ""  # those headers, for the error that asks for --anatomy
    frame: int | None = None  # the frame of an enhanced multi-frame CT file (None: a single-frame file)
    rescale: tuple[float, float] | None = None  # (slope, intercept) to HU


@dataclass
class ScanReport:
    slices: list[SliceRecord] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def summary(self) -> str:
        parts = [f"{len(v)} {k}" for k, v in self.skipped.items() if v]
        return "skipped " + ", ".join(parts) if parts else "nothing skipped"


def _kind(text: str) -> str | None:
    t = text.lower()
    if re.search(r"quarter|low[ _-]?dose|\bqd\b|_qd|qd_", t):
        return "low"
    if re.search(r"full|\bfd\b|_fd|fd_|normal[ _-]?dose", t):
        return "full"
    return None


def scan_folder(root: Path, source: str) -> ScanReport:
    """Read every file's header; keep CT slices with HU rescale tags, count the rest by reason."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    root = Path(root)
    if root.is_file():
        raise ValueError(f"{root} is a file; give the folder that holds the DICOM series.")
    if not root.is_dir():
        raise FileNotFoundError(f"DICOM folder {root} does not exist.")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"DICOM folder {root} is empty; point --root at the folder holding the series.")
    rep = ScanReport()
    sops: dict[str, str] = {}  # SOPInstanceUID -> the file it was first read from
    for p in tqdm(files, desc="reading DICOM headers", unit="file", leave=False):
        try:
            ds = pydicom.dcmread(p)
        except InvalidDicomError:
            rep.skipped["non-DICOM files"].append(str(p))
            continue
        except Exception as exc:  # corrupt files
            rep.skipped["unreadable files"].append(f"{p} ({type(exc).__name__})")
            continue
        if "PixelData" not in ds:
            rep.skipped["files without pixel data"].append(str(p))
            continue
        size = _image_size(ds)
        if isinstance(size, str):
            rep.skipped["slices whose image size headers do not fit their pixel data"].append(f"{p} ({size})")
            continue
        expected = size * int(getattr(ds, "BitsAllocated", 16) or 16) // 8
        syntax = ds.file_meta.TransferSyntaxUID if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else None
        if syntax is not None and not syntax.is_compressed and len(ds.PixelData) < expected:
            rep.skipped["unreadable files"].append(f"{p} (truncated pixel data)")
            continue
        if syntax is not None and not syntax.is_compressed and len(ds.PixelData) > expected + 1:  # +1: even padding
            rep.skipped["slices whose image size headers do not fit their pixel data"].append(
                f"{p} ({len(ds.PixelData)} bytes of pixel data, {expected} for Rows x Columns x frames)")
            continue
        if str(getattr(ds, "DerivationDescription", "")).startswith("ldct-bench "):
            rep.skipped["slices ldct-bench itself wrote (denoised output)"].append(str(p))
            continue
        if syntax is not None and syntax.is_compressed and not _decodable(syntax):
            rep.skipped["compressed slices no installed decoder reads (pip install pylibjpeg-libjpeg "
                        "pylibjpeg-openjpeg)"].append(f"{p} ({syntax.name})")
            continue
        if str(getattr(ds, "Modality", "CT")).upper() != "CT":  # an MR or PET image with rescale tags is not HU
            rep.skipped["images that are not CT (Modality)"].append(f"{p} ({ds.Modality})")
            continue
        frames = _frames(ds)
        if frames is None:
            rep.skipped["slices without RescaleSlope/RescaleIntercept"].append(str(p))
            continue
        if isinstance(frames, str):
            rep.skipped["slices whose rescale to HU is zero or not a finite number"].append(f"{p} ({frames})")
            continue
        sop = str(getattr(ds, "SOPInstanceUID", "") or "")
        if sop and sop in sops:  # the same slice in two places (a series copied twice) is read once
            rep.skipped["duplicate slices (a SOPInstanceUID already read from another file)"].append(
                f"{p} (as {sops[sop]})")
            continue
        if sop:
            sops[sop] = str(p)
        desc = f"{p.parent} {getattr(ds, 'SeriesDescription', '')}"
        kind = "full" if source == "dicom" else _kind(desc)
        if kind is None:
            rep.skipped["slices of unknown dose (no full/quarter/FD/QD in folder or description)"].append(str(p))
            continue
        # a header value names folders only as one safe path component (never '..', '/' or an absolute path)
        patient = safe(getattr(ds, "PatientID", p.parent.name))
        series = str(getattr(ds, "SeriesInstanceUID", p.parent))
        said = "; ".join(f"{t} {str(getattr(ds, t))!r}" for t in ANATOMY_TAGS if getattr(ds, t, None))
        for frame, z, spacing, rescale in frames:
            rep.slices.append(SliceRecord(p, patient, series, kind, z, (int(ds.Rows), int(ds.Columns)), spacing,
                                          anatomy_from_headers(ds), said or "none of " + ", ".join(ANATOMY_TAGS),
                                          frame, rescale))
    if not rep.slices:
        raise ValueError(f"no usable CT slices under {root} ({rep.summary()}).")
    return rep


def _decodable(syntax) -> bool:
    """Whether an installed pydicom pixel-data plugin decodes this transfer syntax (JPEG, JPEG-LS, JPEG 2000, RLE with
    the pylibjpeg plugins this package depends on)."""
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


def _image_size(ds) -> int | str:
    """Pixels in a file's image data (Rows x Columns x frames), or why its headers cannot describe one grey-level
    image (Rows or Columns missing or not positive, several samples per pixel)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames, samples = int(getattr(ds, "NumberOfFrames", 1) or 1), int(getattr(ds, "SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return "Rows or Columns missing or not a number"
    if rows < 1 or cols < 1 or frames < 1:
        return f"Rows {rows}, Columns {cols}, {frames} frame(s)"
    if samples != 1:
        return f"{samples} samples per pixel: not a grey-level CT image"
    return rows * cols * frames


def _rescale(slope, intercept) -> tuple[float, float] | str:
    """(slope, intercept) to HU, or why they are no rescale (zero slope, NaN, infinity, not a number)."""
    try:
        out = (float(slope), float(intercept))
    except (TypeError, ValueError):
        return f"RescaleSlope {slope!r}, RescaleIntercept {intercept!r}"
    if not all(np.isfinite(out)) or out[0] == 0:
        return f"RescaleSlope {out[0]:g}, RescaleIntercept {out[1]:g}"
    return out


def _frames(ds) -> list[tuple[int | None, float, float, tuple[float, float]]] | str | None:
    """Each image of a file as (frame, z, pixel mm, (slope, intercept)): one for a classic CT slice; one per frame for
    an enhanced multi-frame CT, which keeps position, spacing and rescale in its functional groups (a frame's own
    first, then the shared ones). None where the rescale to HU is nowhere; why, where it is no rescale (_rescale)."""
    per_frame = getattr(ds, "PerFrameFunctionalGroupsSequence", None)
    if per_frame is None:
        if getattr(ds, "RescaleSlope", None) is None or getattr(ds, "RescaleIntercept", None) is None:
            return None
        rescale = _rescale(ds.RescaleSlope, ds.RescaleIntercept)
        if isinstance(rescale, str):
            return rescale
        pos = getattr(ds, "ImagePositionPatient", None)
        z = float(pos[2]) if pos is not None else float(getattr(ds, "SliceLocation", getattr(ds, "InstanceNumber", 0)))
        return [(None, z, float(getattr(ds, "PixelSpacing", [0.7, 0.7])[0]), rescale)]
    shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None

    def group(frame, name):
        return next((g[name][0] for g in (frame, shared) if g is not None and name in g and len(g[name].value)), None)

    out = []
    for i, frame in enumerate(per_frame):
        rescale, pos, measures = (group(frame, n) for n in ("PixelValueTransformationSequence", "PlanePositionSequence",
                                                            "PixelMeasuresSequence"))
        if rescale is None or "RescaleSlope" not in rescale or "RescaleIntercept" not in rescale:
            return None
        to_hu = _rescale(rescale.RescaleSlope, rescale.RescaleIntercept)
        if isinstance(to_hu, str):
            return f"frame {i}: {to_hu}"
        z = float(pos.ImagePositionPatient[2]) if pos is not None and "ImagePositionPatient" in pos else float(i)
        spacing = float(measures.PixelSpacing[0]) if measures is not None and "PixelSpacing" in measures else 0.7
        out.append((i, z, spacing, to_hu))
    return out


def read_hu(path: Path, frame: int | None = None, rescale: tuple[float, float] | None = None) -> np.ndarray:
    """One image in HU: a single-frame file with its own rescale, or frame `frame` of a multi-frame one with the
    rescale its functional groups gave (`_frames`)."""
    st = Path(path).stat()
    pixels = _pixels(str(path), st.st_mtime_ns, st.st_size)
    if rescale is None:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        rescale = (float(ds.RescaleSlope), float(ds.RescaleIntercept))
    image = pixels if frame is None else pixels[frame]
    if image.ndim != 2:  # a compressed file's headers are checked only once it is decoded
        raise ValueError(f"{path} decodes to an array of shape {image.shape}, not one image; its Rows, Columns or "
                         "NumberOfFrames disagree with its pixel data: remove it from the folder.")
    return (image.astype(np.float32) * rescale[0] + rescale[1]).astype(np.float32)


@lru_cache(maxsize=2)
def _pixels(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """A file's decoded pixels, kept while its frames are read one by one (a multi-frame file decodes once; the
    file's time and size in the key, so a file written again is read again)."""
    import pydicom

    return pydicom.dcmread(path).pixel_array


def read_volume(records: list[SliceRecord], size: int | None = None) -> np.ndarray:
    """One series' slices in HU, (S, H, W) in the records' order (resampled to `size` where given); one sentence
    when its slices differ in size. Values below -1024 HU are no CT number (nothing attenuates less than air): they
    are the padding outside the reconstruction circle (PixelPaddingValue: -2000, -3024, ...) and are read as air,
    -1024, so that no model meets a cliff there that no scanner's image has inside it (pydicom's 693_J2KI.dcm: 28 %
    of its pixels at -3995; RED-CNN's error at 50 % sat on that circle's rim)."""
    shapes = sorted({r.shape for r in records})
    if len(shapes) > 1:
        raise ValueError(f"series {records[0].series} of patient {records[0].patient} mixes slice sizes {shapes}; "
                         "import one size per series (or resample them first).")
    vol = np.maximum(np.stack([read_hu(r.path, r.frame, r.rescale) for r in records]), np.float32(CT_MIN_HU))
    if size and vol.shape[-1] != size:
        shrink = size < vol.shape[-1]
        vol = F.interpolate(torch.from_numpy(vol)[:, None], size=(size, size), mode="area" if shrink else "bilinear",
                            **({} if shrink else {"align_corners": False}))[:, 0].numpy()
    return vol


def acquisition_headers(path: Path) -> dict:
    """How a slice was acquired, as its headers say (any of them may be absent): scanner maker and model, the
    reconstruction kernel (ConvolutionKernel) and diameter (mm), for the acquisition axis and a model's domain."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)

    def text(tag):
        value = getattr(ds, tag, None)
        value = "\\".join(map(str, value)) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else value
        return str(value).strip()[:64] if value not in (None, "") else None

    try:
        diameter = float(ds.ReconstructionDiameter) if "ReconstructionDiameter" in ds else None
    except (TypeError, ValueError):
        diameter = None
    return {"manufacturer": text("Manufacturer"), "model": text("ManufacturerModelName"),
            "kernel": text("ConvolutionKernel"),
            "reconstruction_diameter_mm": diameter if diameter is not None and np.isfinite(diameter) else None}


def split_patients(patients: list[str]) -> dict[str, list[str]]:
    ps = sorted(patients)
    n = len(ps)
    n_test = max(1, round(0.2 * n)) if n >= 2 else 0
    n_val = max(1, round(0.1 * n)) if n >= 4 else 0
    n_train = n - n_test - n_val
    return {"train": ps[:n_train], "val": ps[n_train:n_train + n_val], "test": ps[n_train + n_val:]}


def import_dataset(root: Path, source: str = "dicom", name: str | None = None, extra_doses=(), size: int | None = None,
                   seed: int = 0, cache_dir: Path | None = None, anatomy: str | None = None) -> LDCTDataset:
    """Import the CT series under `root` as dataset `name`. `anatomy` names the body region of every series; without
    it, Mayo 2016 is abdomen, Mayo 2020 follows the patient prefix, and any other series says it in its headers
    (BODY_PARTS) or the import stops with one sentence asking for it."""
    if source not in ("mayo2016", "mayo2020", "dicom"):
        raise ValueError(f"unknown source {source!r}; choose mayo2016, mayo2020 or dicom.")
    name = name or source
    if not is_plain_name(name) or os.sep in name:
        raise ValueError(f"dataset name {name!r} must be one plain folder name (no '/', '\\' or leading '.'); "
                         "choose e.g. --name mayo2016.")
    rep = scan_folder(root, source)
    final = Path(cache_dir or default_cache_dir()) / name
    out = final.parent / f".{name}.importing-{os.getpid()}"  # built here; moved into place only when complete
    shutil.rmtree(out, ignore_errors=True)
    try:
        _write_dataset(out, rep, root, source, extra_doses, size, seed, anatomy)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # a failed import leaves nothing that `data info` or `run` would see
        raise
    if final.exists():
        old = final.parent / f".{name}.replaced-{os.getpid()}"
        final.rename(old)
        out.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        out.rename(final)
    return LDCTDataset(final)


def _anatomy(patient: str, records: list[SliceRecord], source: str, given: str | None) -> str:
    """The body region of a patient's series: --anatomy, the Mayo conventions, or what the headers say."""
    if given:
        return given
    if source == "mayo2016":
        return "abdomen"
    if source == "mayo2020" and patient[:1].upper() in MAYO2020_ANATOMY:
        return MAYO2020_ANATOMY[patient[:1].upper()][0]
    said = {r.anatomy for r in records}
    if len(said) == 1 and None not in said:
        return said.pop()
    first = records[0]
    what = (f"names {' and '.join(sorted(a for a in said if a))} in different slices" if len(said - {None}) > 1 else
            f"names no body region we know ({first.headers})")
    raise ValueError(f"patient {patient} (series {first.series}, e.g. {first.path}) {what}; give --anatomy "
                     "head, chest or abdomen (the README lists the header words that are read).")


def scan_flux(sim: Simulator, volume: np.ndarray, seed: int, rounds: int = 3,
              line_integrals: torch.Tensor | None = None) -> float:
    """A real scan's full-dose flux as a fraction of `sim`'s (at most 1), from its own noise. A dose is a fraction
    of the scan's own dose, so inserting it needs that scan's flux (Yu et al. read it from the scanner; DICOM
    seldom holds it). At the scan's flux, lowering it to 50 % adds its own noise variance again (nesting:
    1/d - 1 = 1); the flux is corrected until it does on the middle slice (variances by toolkit.estimate_noise_sd,
    compared at equal noise, where the estimator's bias cancels). A scan twice as noisy as the simulator's full dose
    had a quarter of its flux. A quieter one (a smooth kernel, lossy compression, resampling) cannot say how much
    more it had, and keeps the simulator's flux. `line_integrals`: the middle slice's reprojection where the caller
    has it (it does not depend on the flux)."""
    mid = torch.from_numpy(np.ascontiguousarray(volume[len(volume) // 2], dtype=np.float32))
    own = estimate_noise_sd(mid.numpy()) ** 2
    if own <= 0:
        return 1.0
    p = sim.reproject(mid) if line_integrals is None else line_integrals
    flux = 1.0
    for _ in range(rounds):
        at = replace(sim, noise=replace(sim.noise, i0=sim.noise.i0 * flux))
        added = estimate_noise_sd(at.lower_dose(mid, [0.5], [seed], p)[0].numpy()) ** 2 - own
        if added <= 0:
            return 1.0
        flux = min(1.0, flux * added / own)
        if flux == 1.0:
            return 1.0
    return float(flux)


def _reprojections(sim: Simulator, volume: np.ndarray):
    """(first index, slices, their line integrals) of `volume` in parts of REPROJECT_TOGETHER slices, which share
    the projector's ray geometry (a third of the time for three); the middle slice's part first, as its line
    integrals also give the scan's flux."""
    middle = len(volume) // 2
    first = middle - middle % REPROJECT_TOGETHER
    for i0 in [first, *(i for i in range(0, len(volume), REPROJECT_TOGETHER) if i != first)]:
        part = torch.from_numpy(volume[i0:i0 + REPROJECT_TOGETHER])
        yield i0, part, sim.reproject(part)


def _inserted_doses(volume: np.ndarray, pixel_mm: float, doses: list[float], seed: int,
                    patient: str) -> tuple[float, dict[str, np.ndarray]]:
    """The scan's flux and each dose of `doses` inserted into the full-dose `volume`: every dose of a slice from one
    reprojection and one base reconstruction, each slice's noise seeded by its index (so the order does not
    matter)."""
    n = volume.shape[-1]
    sim = Simulator(FanBeamGeometry.covering(n, pixel_mm * n))
    parts = _reprojections(sim, volume)
    middle = next(parts)
    flux = scan_flux(sim, volume, noise_seed(seed, patient, "flux"),
                     line_integrals=middle[2][len(volume) // 2 - middle[0]])
    sim = replace(sim, noise=replace(sim.noise, i0=sim.noise.i0 * flux))
    by_slice = {}
    for i0, part, lines in itertools.chain([middle], parts):  # one part's line integrals in memory at a time
        for i, (s, p) in enumerate(zip(part, lines), i0):
            by_slice[i] = sim.lower_dose(s, doses, [noise_seed(seed, patient, i, d) for d in doses], p).numpy()
    return flux, {dose_key(d): np.stack([by_slice[i][k] for i in range(len(volume))]) for k, d in enumerate(doses)}


def _write_dataset(out: Path, rep: ScanReport, root: Path, source: str, extra_doses, size, seed, anatomy) -> None:
    """The arrays, sources and manifest of an import, written into `out`."""
    by_patient: dict[str, dict[str, list[SliceRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in rep.slices:
        by_patient[r.patient][r.kind].append(r)
    manifest = {"kind": "dicom", "source": source, "version": DATA_VERSION, "root": str(Path(root).resolve()),
                "files": {}, "vendor_doses": {}, "skipped": {k: len(v) for k, v in rep.skipped.items()},
                "skipped_files": {k: list(v) for k, v in rep.skipped.items()},
                "unpaired_slices": 0, "config": {"size": size, "seed": seed, "extra_doses": list(extra_doses)}}
    splits: dict[str, dict[str, list[str]]] = defaultdict(lambda: {s: [] for s in SPLITS})
    anatomy_of = {patient: _anatomy(patient, kinds["full"] or kinds["low"], source, anatomy)
                  for patient, kinds in by_patient.items()}
    for a in sorted(set(anatomy_of.values())):
        for split, ps in split_patients([p for p in by_patient if anatomy_of[p] == a]).items():
            splits[a][split] = ps
    manifest["splits"] = {a: dict(v) for a, v in splits.items()}
    out.mkdir(parents=True, exist_ok=True)
    for patient in tqdm(sorted(by_patient), desc="importing", unit="patient"):
        a = anatomy_of[patient]
        full = sorted(by_patient[patient]["full"], key=lambda r: r.z)
        low = sorted(by_patient[patient].get("low", []), key=lambda r: r.z)
        if not full:
            raise ValueError(f"patient {patient} has no full-dose series; cannot pair or simulate its doses.")
        if low:  # pair by table position (0.1 mm), keep only slices present in both
            zf, zl = {round(r.z, 1): r for r in full}, {round(r.z, 1): r for r in low}
            common = sorted(set(zf) & set(zl))
            manifest["unpaired_slices"] += len(full) + len(low) - 2 * len(common)
            if not common:
                raise ValueError(f"patient {patient}: no full- and low-dose slices share a table position; "
                                 "cannot pair them.")
            full, low = [zf[z] for z in common], [zl[z] for z in common]
        pdir = out / a / patient
        pdir.mkdir(parents=True, exist_ok=True)
        vol_full = read_volume(full, size)
        arrays = {"full": vol_full}
        pixel = full[0].pixel_mm * (full[0].shape[-1] / vol_full.shape[-1])  # after read_volume's resampling
        manifest.setdefault("pixel_mm", {})[patient] = round(pixel, 6)
        manifest.setdefault("acquisition", {})[patient] = acquisition_headers(full[0].path)
        if low:
            vendor = 0.25 if source == "mayo2016" else MAYO2020_ANATOMY.get(patient[:1].upper(), (a, 0.25))[1]
            manifest["vendor_doses"][patient] = vendor
            arrays[dose_key(vendor)] = read_volume(low, size)
        todo = [d for d in dict.fromkeys(extra_doses) if dose_key(d) not in arrays]
        if todo:
            flux, simulated = _inserted_doses(vol_full, pixel, todo, seed, patient)
            manifest.setdefault("flux", {})[patient] = round(flux, 6)
            arrays.update(simulated)
        for key, arr in arrays.items():
            path = pdir / f"{key}.npy"
            atomic_save_npy(path, arr)
            manifest["files"][f"{a}/{patient}/{key}.npy"] = sha256_file(path)
            # the DICOM each slice came from (a simulated dose: its full-dose slice), for --save-images
            origin = low if low and key == dose_key(vendor) else full
            manifest.setdefault("sources", {})[f"{a}/{patient}/{key}"] = [str(r.path.resolve()) for r in origin]
        atomic_write_json(out / "manifest.json", manifest)


def import_summary(ds: LDCTDataset, shown: int = 3) -> str:
    """What an import holds and what it left out, by reason and file (every file is in the manifest's
    `skipped_files`)."""
    man = ds.manifest
    lines = []
    for a in ds.anatomies:
        patients = [p for split in SPLITS for p in ds.patients(a, split)]
        slices = sum(len(man.get("sources", {}).get(f"{a}/{p}/full", [])) for p in patients)
        lines.append(f"  {a}: {len(patients)} patient(s), {slices} slice(s), doses "
                     + ", ".join(f"{d:.0%}" for d in ds.doses(a)))
    for reason, files in man.get("skipped_files", {}).items():
        more = f" and {len(files) - shown} more" if len(files) > shown else ""
        lines.append(f"  skipped {len(files)} {reason}: {', '.join(files[:shown])}{more}")
    if man.get("unpaired_slices"):
        lines.append(f"  dropped {man['unpaired_slices']} full-/low-dose slices without a partner at their table position")
    return "\n".join(["imported:", *lines])
