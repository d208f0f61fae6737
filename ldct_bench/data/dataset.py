"""The cached, versioned dose x anatomy dataset and its loaders.

Layout of one dataset directory (its name carries a hash of the config, so two
configs never share files):

    manifest.json                    config, simulator, doses present, sha256 of every array
    <anatomy>/p<NNN>/full.npy        full-dose slices (S, H, W) float32 HU
    <anatomy>/p<NNN>/d0.2500.npy     the same slices at dose fraction 0.25
    <anatomy>/p<NNN>/truth.npy       the noiseless reconstruction (phantoms only): the scan without quantum noise

Arrays are written under a temporary name and renamed, and the manifest is rewritten
after each patient, so an interrupted simulation resumes where it stopped and never
leaves a half-written array that looks complete. Doses are added incrementally: asking
for a new dose simulates only that dose (noise seeds depend on the dose, not on which
other doses exist).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from ..atomic import atomic_save_npy, atomic_write_json
from ..conventions import ANATOMIES, ANATOMY_MODELS, CT_MIN_HU, DEFAULT_ANATOMY_MODEL, is_plain_name
from .detail import detail_layer
from .geometry import FanBeamGeometry
from .phantoms import ANATOMY_MODEL, phantom_slice, rasterize, texture_amplitude, texture_volume, to_additive
from .projector import ellipse_sinogram
from .simulate import Simulator, dose_key, key_dose, noise_seed
from .support import patient_support, support_sinogram

# 2: structures nested so that additive HU equals painted HU; 3: lower doses nested in the full dose (noise
# insertion), truth = noiseless reconstruction, 8/2/6 patients of 4 slices
DATA_VERSION = 3
# the clinical2 model's heads are scanned at this multiple of the trunk's flux (AnatomyModel.head_protocol): head
# protocols run two to four times a body protocol's tube current-time product. At 1e5 photons a ray the full-dose
# heads' fine-scale noise (metrics.realism.fine_sd, through the head field) was 11-12 HU against the real heads' 4.6-5.1
# (Cranium.inv3's cerebral slices, resampled; 693_J2KI.dcm, lossy JPEG 2000: both lose fine noise) and the skull
# base's 11.1; at 4 it is 6.2-6.9. scripts/realism.py reports where it lands
HEAD_PROTOCOL_FLUX = 4.0
SPLITS = ("train", "val", "test")


def default_cache_dir() -> Path:
    env = os.environ.get("LDCT_BENCH_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ldct-bench"


@dataclass(frozen=True)
class PhantomConfig:
    """What makes an embedded phantom dataset; its hash names the cache directory."""

    image_size: int = 256
    slices_per_patient: int = 4  # adjacent slices add little independent information; patients are the unit
    train_patients: int = 8
    val_patients: int = 2
    test_patients: int = 6
    seed: int = 0
    texture: bool = True
    simulator: dict = field(default_factory=lambda: Simulator().to_dict())
    # "realistic": the ellipses' anatomy with data/detail.py's layer on top; "clinical": that anatomy on the scanner's
    # table (data/support.py), reconstructed inside the scanner's circle; "clinical2": that with a layered scalp,
    # dense cortical tables and a head protocol's flux (phantoms.AnatomyModel); "ellipses": the first model
    anatomy_model: str = DEFAULT_ANATOMY_MODEL

    def __post_init__(self):
        for name in ("image_size", "slices_per_patient", "train_patients", "val_patients", "test_patients"):
            if int(getattr(self, name)) < (8 if name == "image_size" else 1 if name != "val_patients" else 0):
                raise ValueError(f"dataset config: {name}={getattr(self, name)} is too small.")
        if self.anatomy_model not in ANATOMY_MODELS:
            raise ValueError(f"dataset config: anatomy_model={self.anatomy_model!r}; choose from "
                             f"{', '.join(ANATOMY_MODELS)}.")
        geom = dict(self.simulator["geometry"])
        if geom["image_size"] != self.image_size:
            geom["image_size"] = self.image_size
            object.__setattr__(self, "simulator", {**self.simulator, "geometry": geom})

    @classmethod
    def sized(cls, size: int = 256, slices: int = 4, patients: int | None = None, seed: int = 0) -> PhantomConfig:
        """A config for `patients` per anatomy (split about 70/10/20 %, at least 1/0/1); None keeps 8/2/6."""
        if patients is None:
            return cls(image_size=size, slices_per_patient=slices, seed=seed)
        if patients < 2:
            raise ValueError(f"--patients {patients}: need at least 2 per anatomy (one to train, one to test).")
        test = max(1, round(0.2 * patients))
        val = round(0.1 * patients) if patients >= 5 else 0
        return cls(image_size=size, slices_per_patient=slices, train_patients=patients - test - val,
                   val_patients=val, test_patients=test, seed=seed)

    def to_dict(self) -> dict:
        """The config as its manifest records it (and hashes it): the ellipse model, which came first, is left out,
        so its datasets keep their folders and the checkpoints keyed by them."""
        out = asdict(self)
        return {k: v for k, v in out.items() if k != "anatomy_model"} if self.anatomy_model == "ellipses" else out

    @property
    def dataset_name(self) -> str:
        """The cache folder of this dataset (checkpoints trained on it are keyed by it)."""
        return f"embedded-{self.digest()}"

    def digest(self) -> str:
        # The FBP apodisation was first recorded as "window": hashing it under that name keeps the folders of
        # the caches made before it was renamed `filter_window`, and the checkpoints keyed by those folders.
        simulator = {("window" if k == "filter_window" else k): v for k, v in self.simulator.items()}
        blob = json.dumps({"version": DATA_VERSION, **self.to_dict(), "simulator": simulator}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def n_patients(self, split: str) -> int:
        return {"train": self.train_patients, "val": self.val_patients, "test": self.test_patients}[split]

    def patient_index(self, split: str) -> list[int]:
        start = sum(self.n_patients(s) for s in SPLITS[: SPLITS.index(split)])
        return list(range(start, start + self.n_patients(split)))


_REBUILD = "delete that folder and simulate or import it again (`ldct-bench data simulate` or `data import`)"


def manifest_problem(manifest) -> str:
    """What is wrong with a dataset manifest read from disk ('' when nothing): it is input, and every array path
    is built from it, so each must be <anatomy>/<patient>/<name>.npy of plain folder names."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict) \
            or not isinstance(manifest.get("files"), dict):
        return "it is not an object with 'splits' and 'files'"
    for anatomy, splits in manifest["splits"].items():
        if not isinstance(splits, dict) or not all(isinstance(ps, list) and all(is_plain_name(p) for p in ps)
                                                   for ps in splits.values()) or not is_plain_name(anatomy):
            return f"the splits of {anatomy!r} are not lists of plain patient names"
    for rel, digest in manifest["files"].items():
        parts = rel.split("/")
        if len(parts) != 3 or not all(is_plain_name(x) for x in parts) or not parts[2].endswith(".npy") \
                or not isinstance(digest, str):
            return f"file entry {rel!r} is not <anatomy>/<patient>/<array>.npy with its sha256"
    return ""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_HASHED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: each version of a file hashed once


def intact(path: Path, expected: str) -> bool:
    """Whether `path` still has the sha256 its manifest recorded (a zeroed byte range or an edit shows; hashed once
    per process and file version, so reading it again costs nothing)."""
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = sha256_file(path)
    return _HASHED[key] == expected


def neighbour_index(n: int, context: int, wrap: bool = False) -> np.ndarray:
    """(n, 1 + 2 context) indices of each slice and its `context` neighbours per side: repeated at the ends (a
    volume's edge slices), or wrapping round (interchangeable slices, like a z-uniform phantom's realisations)."""
    idx = np.arange(n)[:, None] + np.arange(-context, context + 1)[None, :]
    return idx % n if wrap else np.clip(idx, 0, n - 1)


@dataclass
class Pairs:
    """Paired slices for one query: ld (N, C, H, W) with C = 1 + 2*context, fd (N, 1, H, W), meta, and (when asked
    for and the dataset has it) the noiseless truth (N, 1, H, W)."""

    ld: torch.Tensor
    fd: torch.Tensor
    meta: pd.DataFrame
    truth: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.meta)


class LDCTDataset:
    """A dataset directory: a manifest plus one array per (anatomy, patient, dose)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"no dataset at {self.root} (manifest.json missing); run `ldct-bench data simulate` "
                                    "or `data import` first.")
        try:
            self.manifest = json.loads(path.read_text())
        except ValueError:
            raise ValueError(f"the dataset manifest {path} is not valid JSON; {_REBUILD}.") from None
        problem = manifest_problem(self.manifest)
        if problem:
            raise ValueError(f"the dataset manifest {path} is damaged ({problem}); {_REBUILD}.")

    # -- building ---------------------------------------------------------------------------------------
    @classmethod
    def embedded(cls, config: PhantomConfig | None = None, doses=(), anatomies=ANATOMIES, splits=SPLITS,
                 cache_dir: Path | None = None, progress: bool = True) -> LDCTDataset:
        """The phantom dataset for `config`, simulating whatever (anatomy, split, dose) is missing."""
        config = config or PhantomConfig()
        root = Path(cache_dir or default_cache_dir()) / config.dataset_name
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(root / ".lock"):  # one writer at a time: a concurrent simulation waits, then adds what is missing
            cls._simulate_missing(root, config, doses, anatomies, splits, progress)
        return cls(root)

    @staticmethod
    def _simulate_missing(root: Path, config: PhantomConfig, doses, anatomies, splits, progress: bool) -> None:
        mpath = root / "manifest.json"
        manifest = json.loads(mpath.read_text()) if mpath.is_file() else {
            "kind": "embedded", "version": DATA_VERSION, "config": config.to_dict(), "files": {},
            "splits": {a: {s: [f"p{i:03d}" for i in config.patient_index(s)] for s in SPLITS} for a in ANATOMIES},
        }
        sim = Simulator.from_dict(config.simulator)
        doses = sorted({float(d) for d in doses} - {1.0})
        todo = [(a, i) for a in anatomies for s in splits for i in config.patient_index(s)]
        bar = tqdm(todo, desc="simulating", unit="patient", disable=not progress)
        for anatomy, idx in bar:
            pdir = root / anatomy / f"p{idx:03d}"
            want = ["truth", "full"] + [dose_key(d) for d in doses]
            missing = [k for k in want  # absent, or damaged since: simulated (again)
                       if not intact(pdir / f"{k}.npy", manifest["files"].get(f"{anatomy}/p{idx:03d}/{k}.npy"))]
            if not missing:
                continue
            bar.set_postfix_str(f"{anatomy} p{idx:03d}")
            pdir.mkdir(parents=True, exist_ok=True)
            arrays = _simulate_patient(config, sim, anatomy, idx, missing)
            for key, arr in arrays.items():
                path = pdir / f"{key}.npy"
                atomic_save_npy(path, arr)
                manifest["files"][f"{anatomy}/p{idx:03d}/{key}.npy"] = sha256_file(path)
            atomic_write_json(mpath, manifest)
        if not mpath.is_file():
            atomic_write_json(mpath, manifest)

    # -- reading ----------------------------------------------------------------------------------------
    @property
    def anatomies(self) -> list[str]:
        return sorted(self.manifest["splits"])

    @property
    def pixel_mm(self) -> float | dict[str, float] | None:
        """In-plane pixel size in mm: one value for simulated phantoms, per patient for an import (None where an
        older import did not record it)."""
        if self.manifest.get("kind") == "embedded":
            return Simulator.from_dict(self.manifest["config"]["simulator"]).geometry.pixel_mm
        return self.manifest.get("pixel_mm")

    def domain(self) -> dict:
        """What a model trained on this dataset saw of acquisition: the range of pixel sizes (mm), the acquisition
        profiles (an import: each patient's scanner and kernel as its headers name them) and the kernels."""
        if self.manifest.get("kind") == "embedded":
            from .acquisition import ACQUISITIONS, acquisition_of

            sim = Simulator.from_dict(self.manifest["config"]["simulator"])
            name = acquisition_of(self.manifest["config"]["simulator"])
            kernel = ACQUISITIONS[name].kernel.name if name in ACQUISITIONS else f"{sim.filter_window}@{sim.filter_cutoff:g}"
            pixel = sim.geometry.pixel_mm
            return {"pixel_mm": [pixel, pixel], "acquisitions": [name], "kernels": [kernel]}
        pixels = [float(v) for v in (self.manifest.get("pixel_mm") or {}).values()]
        heads = list((self.manifest.get("acquisition") or {}).values())
        return {"pixel_mm": [min(pixels), max(pixels)] if pixels else None,
                "acquisitions": sorted({f"{h.get('manufacturer') or '?'} {h.get('kernel') or '?'}" for h in heads}),
                "kernels": sorted({h.get("kernel") or "?" for h in heads})}

    def patients(self, anatomy: str, split: str | tuple[str, ...]) -> list[str]:
        """The patients of `anatomy` in `split` (or in each of several splits, in order)."""
        if anatomy not in self.manifest["splits"]:
            raise ValueError(f"anatomy {anatomy!r} is not in the dataset at {self.root}; "
                             f"it has {', '.join(self.anatomies)}.")
        splits = (split,) if isinstance(split, str) else split
        return [p for s in splits for p in self.manifest["splits"][anatomy].get(s, [])]

    def doses(self, anatomy: str | None = None) -> list[float]:
        """Dose fractions present for every patient (of `anatomy`, or of all)."""
        per_patient: dict[str, set] = {}
        for f in self.manifest["files"]:
            a, p, name = f.split("/")
            if (anatomy is None or a == anatomy) and name.startswith("d"):
                per_patient.setdefault(f"{a}/{p}", set()).add(float(name[1:-4]))
        sets = list(per_patient.values())
        return sorted(set.intersection(*sets)) if sets else []

    def volume(self, anatomy: str, patient: str, key: str) -> np.ndarray:
        rel = f"{anatomy}/{patient}/{key}.npy"
        if rel not in self.manifest["files"]:
            raise KeyError(f"{rel} is not in the dataset at {self.root}; simulate or import that dose first.")
        fix = (self.repair_command() if self.manifest.get("kind") == "embedded" else
               "import the dataset again with `ldct-bench data import`")
        if not intact(self.root / rel, self.manifest["files"][rel]):
            what = ("does not match the sha256 its manifest recorded (damaged or edited)"
                    if (self.root / rel).is_file() else "is missing")
            raise ValueError(f"the cached array {self.root / rel} {what}; {fix}.")
        try:
            return np.load(self.root / rel, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:  # truncated, bad header, gone
            raise ValueError(f"the cached array {self.root / rel} cannot be read ({type(exc).__name__}); {fix}.") from None

    def pairs_shape(self) -> tuple[int, int]:
        """The (H, W) of its slices, from its config or its first array."""
        if self.manifest.get("kind") == "embedded":
            return (self.manifest["config"]["image_size"],) * 2
        rel = next(iter(self.manifest["files"]))
        return tuple(np.load(self.root / rel, mmap_mode="r").shape[-2:])

    def repair_command(self) -> str:
        """How to simulate this phantom dataset's damaged or missing arrays again, in its own folder: the `data
        simulate` command of its config (which replaces what fails its sha256)."""
        try:
            config = PhantomConfig(**self.manifest["config"])
        except (KeyError, TypeError, ValueError):
            return f"delete {self.root} and simulate it again"
        counts = (config.train_patients, config.val_patients, config.test_patients)
        default = PhantomConfig(image_size=config.image_size, slices_per_patient=config.slices_per_patient,
                                seed=config.seed)
        n = None if counts == (default.train_patients, default.val_patients, default.test_patients) else sum(counts)
        try:
            made = PhantomConfig.sized(config.image_size, config.slices_per_patient, n, config.seed)
        except ValueError:
            made = None
        if made is None or made.dataset_name != self.root.name:  # built from Python with a config no flag gives
            return (f"simulate it again from Python with LDCTDataset.embedded(PhantomConfig(**manifest['config']), "
                    f"cache_dir='{self.root.parent}')")
        doses = ",".join(f"{d * 100:g}" for d in self.doses())
        held = [a for a in ANATOMIES if any(k.startswith(f"{a}/") for k in self.manifest["files"])]
        return (f"simulate it again with `ldct-bench data simulate --size {config.image_size} --slices "
                f"{config.slices_per_patient}" + (f" --patients {n}" if n else "") + f" --seed {config.seed}"
                + (f" --anatomies {','.join(held)}" if held and len(held) < len(ANATOMIES) else "")
                + (f" --doses {doses}" if doses else "") + f" --cache-dir {self.root.parent}`, which replaces the "
                "damaged arrays")

    def source_files(self, anatomy: str, patient: str, key: str) -> list[Path] | None:
        """The DICOM file of every slice of an imported volume (None for simulated phantoms)."""
        files = self.manifest.get("sources", {}).get(f"{anatomy}/{patient}/{key}")
        return [Path(f) for f in files] if files else None

    def has_truth(self, anatomy: str, patient: str) -> bool:
        return f"{anatomy}/{patient}/truth.npy" in self.manifest["files"]

    def pairs(self, anatomies, doses, split: str | tuple[str, ...], context: int = 0, max_slices: int | None = None,
              truth: bool = False) -> Pairs:
        """Low-dose/full-dose pairs for every slice of `split`, each dose and anatomy; context=k adds k neighbours
        per side; truth=True adds the noiseless truth where every patient of the query has one."""
        lds, fds, rows = [], [], []
        for anatomy in anatomies:
            for patient in self.patients(anatomy, split):
                full = self.volume(anatomy, patient, "full")
                n = full.shape[0] if max_slices is None else min(max_slices, full.shape[0])
                index = neighbour_index(full.shape[0], context)
                for dose in doses:
                    vol = self.volume(anatomy, patient, dose_key(dose))
                    for s in range(n):
                        lds.append(np.asarray(vol[index[s]]))
                        fds.append(np.asarray(full[s:s + 1]))
                        rows.append((anatomy, patient, s, float(dose)))
        meta = pd.DataFrame(rows, columns=["anatomy", "patient", "slice", "dose"])
        if not rows:
            raise ValueError(f"no slices for split={split!r}, anatomies={list(anatomies)}, doses={list(doses)} "
                             f"in {self.root}.")
        pairs = Pairs(torch.from_numpy(np.stack(lds)), torch.from_numpy(np.stack(fds)), meta)
        if truth and all(self.has_truth(a, p) for a, p in meta[["anatomy", "patient"]].drop_duplicates().to_numpy()):
            pairs.truth = torch.from_numpy(np.stack([np.asarray(self.volume(a, p, "truth")[s:s + 1])
                                                     for a, p, s in meta[["anatomy", "patient", "slice"]].to_numpy()]))
        return pairs


class DatasetUnion:
    """Several datasets read as one for training: the embedded phantoms through several acquisitions
    (`embedded@default,sharp`). Their pairs are concatenated (the same patient IDs: the same phantoms, scanned
    otherwise); its domain spans theirs."""

    def __init__(self, parts: list[LDCTDataset]):
        if len({tuple(p.pairs_shape()) for p in parts}) > 1:
            raise ValueError("the datasets of a union must share their image size; simulate them with one --size.")
        self.parts = parts
        self.root = Path("+".join(p.root.name for p in parts))  # the name checkpoints are keyed by
        self.manifest = {"kind": "union", "parts": [str(p.root) for p in parts]}

    @property
    def anatomies(self) -> list[str]:
        return sorted(set.intersection(*(set(p.anatomies) for p in self.parts)))

    def patients(self, anatomy: str, split) -> list[str]:
        return list(dict.fromkeys(x for p in self.parts for x in p.patients(anatomy, split)))

    def doses(self, anatomy: str | None = None) -> list[float]:
        return sorted(set.intersection(*(set(p.doses(anatomy)) for p in self.parts)))

    def domain(self) -> dict:
        domains = [p.domain() for p in self.parts]
        pixels = [v for d in domains if d["pixel_mm"] for v in d["pixel_mm"]]
        return {"pixel_mm": [min(pixels), max(pixels)] if pixels else None,
                "acquisitions": sorted({a for d in domains for a in d["acquisitions"]}),
                "kernels": sorted({k for d in domains for k in d["kernels"]})}

    def pairs(self, anatomies, doses, split, context: int = 0, max_slices: int | None = None,
              truth: bool = False) -> Pairs:
        parts = [p.pairs(anatomies, doses, split, context, max_slices, truth) for p in self.parts]
        truths = [q.truth for q in parts]
        return Pairs(torch.cat([q.ld for q in parts]), torch.cat([q.fd for q in parts]),
                     pd.concat([q.meta for q in parts], ignore_index=True),
                     torch.cat(truths) if all(t is not None for t in truths) else None)


def _simulate_patient(config: PhantomConfig, sim: Simulator, anatomy: str, idx: int, keys: list[str]) -> dict:
    """Simulate the requested arrays ('truth', 'full', 'd0.2500', ...) for one phantom patient. The full-dose noise
    comes from its own seed, so a dose added later is nested in the same full-dose scan. The slices' sinograms are
    reconstructed together (a few slices per call), so the back-projector's geometry serves every image of them."""
    seed = noise_seed(config.seed, anatomy, idx)
    n = config.slices_per_patient
    z0 = np.random.default_rng([seed, 7]).uniform(-0.5, 0.5)
    zs = z0 + 0.08 * (np.arange(n) - (n - 1) / 2)
    scans = [k for k in keys if k != "truth"]
    doses = [key_dose(k) for k in scans]
    out = {k: np.empty((n, config.image_size, config.image_size), np.float32) for k in keys}
    # the texture's grain is 1.2 pixels of a 350 mm field at this matrix: a smaller display field magnifies it
    zoom = FanBeamGeometry().fov_mm / sim.geometry.fov_mm
    model = ANATOMY_MODEL[config.anatomy_model]
    realistic, table, layered = model.realistic, model.table, model.layered_scalp
    if model.head_protocol and anatomy == "head":
        sim = replace(sim, noise=replace(sim.noise, i0=sim.noise.i0 * HEAD_PROTOCOL_FLUX))
    tex = texture_volume(seed, n, config.image_size, 1.2 * zoom) if config.texture and not realistic else None
    if table:  # the table's hardware is the same at every slice: one sinogram serves them all
        support = patient_support(anatomy, seed, layered)
        hardware = support_sinogram(sim.geometry, support)
    per_call = max(1, _IMAGES_PER_RECONSTRUCTION // len(keys))
    order = ["truth"] * ("truth" in out) + scans  # each slice's images in a reconstruction, in turn
    for s0 in range(0, n, per_call):
        sinograms, textures = [], []
        for s in range(s0, min(n, s0 + per_call)):
            items = phantom_slice(anatomy, seed, float(zs[s]), realistic, table, layered)
            rows = to_additive(items)
            if realistic:  # its own texture among the rest of the detail
                textures.append(detail_layer(anatomy, seed, float(zs[s]), items, sim, support if table else None))
            else:
                textures.append(tex[s] * texture_amplitude(rasterize(rows, sim.geometry).numpy()) if tex is not None
                                else 0.0)
            p = ellipse_sinogram(sim.geometry, rows) + (hardware if table else 0.0)
            if "truth" in out:  # kept as float32, which is what reconstruct() takes them to
                sinograms.append(p[None].float())
            if scans:
                sinograms.append(sim.noisy(p, noise_seed(seed, s, "full"), doses, [noise_seed(seed, s, k) for k in scans]))
        images = sim.reconstruct(torch.cat(sinograms)).numpy().reshape(-1, len(keys), *out[keys[0]].shape[1:])
        for s, texture, imgs in zip(range(s0, n), textures, images):
            for name, img in zip(order, imgs):
                out[name][s] = img + texture
    if table:  # nothing is reconstructed outside the scanner's circle (the value DICOM import gives padding)
        outside = sim.geometry.outside_circle().numpy()
        for image in out.values():
            image[:, outside] = CT_MIN_HU
    return out


_IMAGES_PER_RECONSTRUCTION = 24  # about 80 MB of float32 sinograms: one patient of the default dataset per call
