"""Real CT from an InVesalius project file (.inv3): the one real CT volume Debian's packages hold
(`invesalius-examples`: examples/Cranium.inv3, a head CT, GPL-2, fetched by scripts/fetch_cranium.sh, never
committed).

An .inv3 is a gzip tar of one folder: main.plist names the volume (matrix.dat: raw int16 HU, its dtype, shape
(slices, rows, columns) and spacing (x, y, z) mm) and the masks and surfaces made from it. Cranium's first axis is
axial although its orientation flag says 1: its slices have square 0.957 mm pixels with 1.5 mm between them (a
coronal reformat would have 1.5 mm rows), and they show the skull's ring around the ventricles, the orbits and skull
base at one end of the stack and the vertex at the other (results/realism/cranium_axes.png shows the three axes).
Its rows run posterior (the head rest's arc) to anterior: `read_inv3` turns it anterior-up, the phantoms' and
DICOM's display convention.
`write_dicom` makes it a CT series that `ldct-bench data import --source dicom` reads like any other.
"""

from __future__ import annotations

import plistlib
import tarfile
from pathlib import Path

import numpy as np

DTYPES = {"int16": "<i2", "uint16": "<u2", "int8": "i1", "uint8": "u1", "float32": "<f4"}


def read_inv3(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(volume (slices, rows, columns) float32 HU, anterior up; spacing (slice, row, column) mm) of an .inv3 file;
    one sentence when it is not one."""
    path = Path(path)
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            if "main.plist" not in members:
                raise ValueError(f"{path}: no main.plist inside; not an InVesalius project.")
            main = plistlib.loads(tar.extractfile(members["main.plist"]).read())
            matrix = main.get("matrix") if isinstance(main, dict) else None
            if not isinstance(matrix, dict):
                raise ValueError(f"{path}: main.plist names no volume (matrix).")
            name, dtype, shape = matrix.get("filename"), matrix.get("dtype"), matrix.get("shape")
            spacing = main.get("spacing")
            if (name not in members or dtype not in DTYPES or not isinstance(shape, list) or len(shape) != 3
                    or not all(isinstance(n, int) and 0 < n <= 4096 for n in shape) or not isinstance(spacing, list)
                    or len(spacing) != 3 or not all(isinstance(v, (int, float)) and 0 < v < 100 for v in spacing)):
                raise ValueError(f"{path}: main.plist's matrix ({name}, {dtype}, {shape}, spacing {spacing}) is not a "
                                 "volume this reader knows.")
            raw = tar.extractfile(members[name]).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .inv3 (gzip tar): {exc}.") from None
    except plistlib.InvalidFileException:
        raise ValueError(f"{path}: main.plist is not a property list.") from None
    count = int(np.prod(shape))
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    if len(raw) < count * itemsize:
        raise ValueError(f"{path}: {name} holds {len(raw)} bytes; its shape {shape} needs {count * itemsize}.")
    volume = np.frombuffer(raw, DTYPES[dtype], count).reshape(shape).astype(np.float32)
    return np.ascontiguousarray(volume[:, ::-1, :]), (float(spacing[2]), float(spacing[1]), float(spacing[0]))


def write_dicom(volume: np.ndarray, spacing: tuple[float, float, float], out: Path, patient: str = "Cranium",
                description: str = "InVesalius example head CT") -> list[Path]:
    """Each slice of `volume` (HU, anterior up) as a CT DICOM file in `out` (int16 with a -1024 intercept), one
    series; returns the files."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(entropy_srcs=[patient, "series"]), generate_uid(entropy_srcs=[patient, "study"])
    files = []
    for i, img in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[patient, str(i)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"{i:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", patient, patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesDescription = study, series, description
        ds.BodyPartExamined = "HEAD"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i * spacing[0])]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.SliceThickness = float(spacing[0])
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.Rows, ds.Columns = img.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.PixelData = np.clip(np.round(img + 1024.0), -32768, 32767).astype("<i2").tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
        files.append(Path(ds.filename))
    return files
