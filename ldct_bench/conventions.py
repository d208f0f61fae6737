"""The suite's shared vocabulary, each item defined once: body regions, the CT number range, dose labels,
comma-separated lists and free text as a path component. Every layer (data, protocol, metrics, methods, report)
reads it from here."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

ANATOMIES = ("head", "chest", "abdomen")
ANATOMY_MODELS = ("ellipses", "realistic", "clinical", "clinical2")  # the embedded patients' models (data/dataset.py)
# the default since #30: the realistic anatomy on the scanner's table, the data every committed checkpoint saw
DEFAULT_ANATOMY_MODEL = "clinical"

# CT numbers are stored in 12 bits with an intercept of -1024: an image holds values in [-1024, 3071] HU.
CT_MIN_HU = -1024
CT_LEVELS = 2**12
# The `full` metric window spans exactly those values, so its data_range is 4095, a 12-bit image's range.
FULL_RANGE_HU = (CT_MIN_HU, CT_MIN_HU + CT_LEVELS - 1)
# Networks see (HU + 1024) / 4096: the [-1024, 3072] normalisation of the RED-CNN reference loader
# (norm_range_min/max), which CoreDiff and WGAN-VGG share here and the committed checkpoints were trained with.
NETWORK_RANGE_HU = (CT_MIN_HU, CT_MIN_HU + CT_LEVELS)


def dose_label(dose: float) -> str:
    """0.25 -> '25%'; 1/6 -> '16.7%'."""
    pct = dose * 100
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 1e-6 else f"{pct:.1f}%"


def specialist_label(method: str, dose: float) -> str:
    """('redcnn', 0.05) -> 'redcnn@5%': an `--oracle` specialist of `method` trained on `dose` alone."""
    return f"{method}@{dose_label(dose)}"


def specialist_of(label: str) -> str | None:
    """'redcnn@5%' -> 'redcnn' (the generalist it is compared with); None for a generalist's label."""
    return label.split("@")[0] if "@" in label else None


def dose_labels(doses) -> str:
    """(0.1, 0.5) -> '10%, 50%'."""
    return ", ".join(dose_label(d) for d in doses)


def split_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']: how every comma-separated command-line option is read."""
    return [t.strip() for t in str(text).split(",") if t.strip()]


def safe(name) -> str:
    """Free text (a method or anatomy name, a DICOM header value) as one path component: percent-encoded, so it
    holds no separator, is never '.' or '..' nor hidden (a leading '.' is written %2E), never empty ('%'), and two
    distinct names stay distinct (quote escapes '%' itself). A name over 200 characters keeps its first 180 and a
    hash of the whole, which file systems' 255-byte limit admits."""
    text = quote(str(name), safe="-_.[]+ ")
    if text.startswith("."):
        text = "%2E" + text[1:]
    if len(text) > 200:
        text = text[:180] + "~" + hashlib.sha256(str(name).encode()).hexdigest()[:16]
    return text or "%"


def is_plain_name(name) -> bool:
    """Whether `name` is one folder name that cannot climb or hide: text, not empty, no separator, no leading '.'
    (so never '.' or '..'); what `safe` makes of any text, and what a name read from a file must already be."""
    return isinstance(name, str) and bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name
