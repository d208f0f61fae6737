"""The image-quality phantom: a CCT189-like water cylinder for task-based image quality (TG-233, LCD_CT).

A 200 mm water cylinder (the body of the MITA CCT189 phantom) holding
- four low-contrast disks 40 mm from the centre on the diagonals, 3 mm / 14 HU, 5 mm / 7 HU, 7 mm / 5 HU and
  10 mm / 3 HU, laid out as LCD_CT's `CCT189_obj.m` lays them out: the detectability task;
- two 25 mm rods 65 mm from the centre on the horizontal axis, bone (+1000 HU) and polystyrene (-35 HU), the
  high- and low-contrast materials of TG-233's Mercury phantom: the circular-edge TTF;
- uniform water in the centre, clear of every insert: the NPS region.
A signal-absent image is the same cylinder without the disks (rods kept), as LCD_CT scans the background
module. Each realisation is an independent full-dose scan of the object through the run's simulator with its
lower doses nested in it (noise insertion), exactly as the anatomical data is made. The phantom is uniform along
z (CCT189's disks are rods), so a contextual method's neighbouring slices are other realisations of its class.

Layout of the cached set (its folder name carries a hash of the config):

    manifest.json               config, doses present, sha256 of every array
    present/truth.npy           the noiseless reconstruction (H, W) float32 HU
    present/full.npy            every realisation at full dose (R, H, W)
    present/d0.1000.npy         the same realisations at dose 0.1
    absent/...                  the same without the disks
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from ..atomic import atomic_save_npy, atomic_write_json
from .dataset import default_cache_dir, intact, sha256_file
from .geometry import FanBeamGeometry
from .phantoms import Ellipse, to_additive
from .projector import ellipse_sinogram
from .simulate import Simulator, dose_key, key_dose, noise_seed

IQ_VERSION = 1
# realisations reconstructed in one back-projection: its per-pixel geometry, most of the work for a few sinograms,
# is then shared by all of them (each image is the same sum, in the same order, as alone)
RECONSTRUCT_TOGETHER = 8
CLASSES = ("present", "absent")  # signal present / signal absent
CYLINDER_MM = 200.0
NPS_ROI_MM = 40.0  # side of the central uniform square (it stays 10 mm clear of the disks)


class Insert(NamedTuple):
    """A disk or rod of the phantom: its name, centre (mm, y up), diameter (mm) and HU."""

    name: str
    x: float
    y: float
    diameter: float
    hu: float

    @property
    def radius(self) -> float:
        return self.diameter / 2


_D = 40.0 / math.sqrt(2)  # CCT189: disk centres 40 mm from the centre, on the diagonals
DISKS = (Insert("3mm/14HU", _D, _D, 3.0, 14.0), Insert("5mm/7HU", -_D, _D, 5.0, 7.0),
         Insert("7mm/5HU", -_D, -_D, 7.0, 5.0), Insert("10mm/3HU", _D, -_D, 10.0, 3.0))
RODS = (Insert("bone/+1000HU", 65.0, 0.0, 25.0, 1000.0), Insert("polystyrene/-35HU", -65.0, 0.0, 25.0, -35.0))


def ellipses(signal: bool) -> list[Ellipse]:
    """The phantom in painter's order (absolute HU): water cylinder, rods, and the disks when `signal`."""
    items = [Ellipse(0.0, 0.0, CYLINDER_MM / 2, CYLINDER_MM / 2, 0.0, 0.0, "water")]
    for ins in RODS + (DISKS if signal else ()):
        items.append(Ellipse(ins.x, ins.y, ins.radius, ins.radius, 0.0, ins.hu, ins.name))
    return items


def to_pixel(geom: FanBeamGeometry, x_mm: float, y_mm: float) -> tuple[float, float]:
    """(row, column) of a point in mm on the image grid (row 0 is the top, largest y)."""
    c = (geom.image_size - 1) / 2
    return c - y_mm / geom.pixel_mm, c + x_mm / geom.pixel_mm


@dataclass(frozen=True)
class IQConfig:
    """What makes an image-quality set; its hash names the cache folder."""

    realisations: int = 100  # per class: 100 signal-present and 100 signal-absent scans at each dose
    seed: int = 0
    simulator: dict = field(default_factory=lambda: Simulator().to_dict())

    def __post_init__(self):
        if int(self.realisations) < 8:
            raise ValueError(f"image-quality set: realisations={self.realisations} is too few for an observer (>= 8).")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def name(self) -> str:
        blob = json.dumps({"version": IQ_VERSION, **self.to_dict()}, sort_keys=True).encode()
        return f"iq-{hashlib.sha256(blob).hexdigest()[:12]}"

    @property
    def geometry(self) -> FanBeamGeometry:
        return Simulator.from_dict(self.simulator).geometry


class IQPhantomSet:
    """A cached image-quality set: R realisations per class at every dose asked for, and the noiseless truth."""

    def __init__(self, root: Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"no image-quality set at {self.root} (manifest.json missing).")
        self.manifest = json.loads(path.read_text())
        self.config = IQConfig(**self.manifest["config"])

    @classmethod
    def build(cls, config: IQConfig | None = None, doses=(), cache_dir: Path | None = None,
              progress: bool = True) -> IQPhantomSet:
        """The set for `config`, simulating whatever (class, dose) is missing (full dose and truth always)."""
        config = config or IQConfig()
        root = Path(cache_dir or default_cache_dir()) / config.name
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(root / ".lock"):  # one writer at a time, as for the anatomical data
            _simulate_missing(root, config, doses, progress)
        return cls(root)

    @property
    def geometry(self) -> FanBeamGeometry:
        return self.config.geometry

    def images(self, signal: str, dose: float) -> np.ndarray:
        """Every realisation of class `signal` ('present'/'absent') at `dose` (1.0: the full dose), (R, H, W) HU."""
        return self._array(f"{signal}/{'full' if dose == 1.0 else dose_key(dose)}.npy")

    def truth(self, signal: str) -> np.ndarray:
        return self._array(f"{signal}/truth.npy")

    def _array(self, rel: str) -> np.ndarray:
        if rel not in self.manifest["files"] or not intact(self.root / rel, self.manifest["files"][rel]):
            raise ValueError(f"the image-quality array {self.root / rel} is missing or damaged; delete {self.root} "
                             "and run again (it is simulated afresh).")
        return np.load(self.root / rel, allow_pickle=False)


def _simulate_missing(root: Path, config: IQConfig, doses, progress: bool) -> None:
    mpath = root / "manifest.json"
    manifest = json.loads(mpath.read_text()) if mpath.is_file() else {
        "kind": "iq-phantom", "version": IQ_VERSION, "config": config.to_dict(), "files": {},
        "disks": [d._asdict() for d in DISKS], "rods": [r._asdict() for r in RODS]}
    sim = Simulator.from_dict(config.simulator)
    keys = ["full"] + [dose_key(d) for d in sorted({float(d) for d in doses} - {1.0})]
    for signal in CLASSES:
        missing = [k for k in ["truth", *keys] if not intact(root / signal / f"{k}.npy",
                                                           manifest["files"].get(f"{signal}/{k}.npy"))]
        if not missing:
            continue
        for key, arr in _simulate_class(config, sim, signal, missing, progress).items():
            path = root / signal / f"{key}.npy"
            atomic_save_npy(path, arr)
            manifest["files"][f"{signal}/{key}.npy"] = sha256_file(path)
        atomic_write_json(mpath, manifest)
    if not mpath.is_file():
        atomic_write_json(mpath, manifest)


def _simulate_class(config: IQConfig, sim: Simulator, signal: str, keys: list[str], progress: bool) -> dict:
    """The requested arrays of one class. Realisation r's full-dose noise has its own seed and each dose adds its
    own, so a dose added later is nested in the same full-dose scans."""
    p = ellipse_sinogram(sim.geometry, to_additive(ellipses(signal == "present")))
    out = {}
    if "truth" in keys:
        out["truth"] = sim.reconstruct(p[None])[0].numpy()
    scans = [k for k in keys if k != "truth"]
    if not scans:
        return out
    n, size = config.realisations, sim.geometry.image_size
    stacks = {k: np.empty((n, size, size), np.float32) for k in scans}
    doses = [key_dose(k) for k in scans]
    with tqdm(total=n, desc=f"image-quality phantom ({signal})", unit="scan", disable=not progress) as bar:
        for r0 in range(0, n, RECONSTRUCT_TOGETHER):
            rs = range(r0, min(r0 + RECONSTRUCT_TOGETHER, n))
            sinograms = torch.cat([sim.noisy(p, noise_seed(config.seed, "iq", signal, r, "full"), doses,
                                             [noise_seed(config.seed, "iq", signal, r, k) for k in scans]) for r in rs])
            imgs = sim.reconstruct(sinograms).numpy().reshape(len(rs), len(scans), size, size)
            for i, k in enumerate(scans):
                stacks[k][r0:r0 + len(rs)] = imgs[:, i]
            bar.update(len(rs))
    return {**out, **stacks}
