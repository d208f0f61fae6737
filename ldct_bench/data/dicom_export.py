"""Denoised slices back to DICOM, for viewing beside the scanner's series in any PACS or viewer.

Each output file is its source slice (the low-dose slice it was denoised from, or the full-dose
slice a simulated dose was made from) with the pixels replaced, stored through the source's own
rescale slope/intercept, a new SeriesInstanceUID shared by the series and a new SOPInstanceUID
per slice, ImageType DERIVED/SECONDARY, and a SeriesDescription naming the method.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ..atomic import atomic_path


def write_series(images_hu: np.ndarray, sources: list[Path], out_dir: Path, description: str,
                 derivation: str = "") -> list[Path]:
    """Write (N, H, W) HU images as one new series in `out_dir`, slice i from the headers of sources[i]
    (`derivation`: how they were made, in DerivationDescription)."""
    if len(images_hu) != len(sources):
        raise ValueError(f"{len(images_hu)} images but {len(sources)} source DICOM files.")
    series_uid = generate_uid()
    written = []
    for i, (img, src) in enumerate(zip(images_hu, sources)):
        ds = pydicom.dcmread(src)
        slope, intercept = float(getattr(ds, "RescaleSlope", 1.0)), float(getattr(ds, "RescaleIntercept", 0.0))
        h, w = img.shape
        if (int(ds.Rows), int(ds.Columns)) != (h, w):  # imported at another size: same field of view
            if "PixelSpacing" in ds:
                ds.PixelSpacing = [float(ds.PixelSpacing[0]) * int(ds.Rows) / h,
                                   float(ds.PixelSpacing[1]) * int(ds.Columns) / w]
            ds.Rows, ds.Columns = h, w
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        dtype = np.int16 if signed else np.uint16
        info = np.iinfo(dtype)
        stored = np.clip(np.round((np.asarray(img, np.float64) - intercept) / slope), info.min, info.max).astype(dtype)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.SamplesPerPixel = 16, 16, 15, 1
        ds.PixelData = stored.tobytes()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian  # written uncompressed whatever the source was
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesDescription = description[:64]
        ds.ImageType = ["DERIVED", "SECONDARY"]
        if derivation:
            ds.DerivationDescription = derivation[:1024]
        path = Path(out_dir) / f"{i:04d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, ".tmp.dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        written.append(path)
    return written
