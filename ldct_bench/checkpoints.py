"""What a trained checkpoint is (its TrainJob), and where it lives: committed reference weights first, then the
user's cache.

A checkpoint folder is named by everything that makes it: method, profile, dataset (its
directory name carries the data config hash), seen doses, anatomies, seed, and the config
fields set on top of the profile (`--set`), which add a short hash of themselves.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .data.dataset import default_cache_dir

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "results" / "checkpoints"


@dataclass
class TrainJob:
    """What a training run is: its identity decides whether a checkpoint can be found or resumed."""

    method: str
    profile: str
    doses: tuple[float, ...]
    anatomies: tuple[str, ...]
    data: str  # dataset directory name (carries the data config hash)
    seed: int = 0
    overrides: dict = field(default_factory=dict)  # config fields set on top of the profile (they change training)

    def identity(self, method) -> dict:
        """What a resumed training must match (the config holds the overrides)."""
        return {"method": self.method, "profile": self.profile, "doses": [float(d) for d in self.doses],
                "anatomies": list(self.anatomies), "data": self.data, "seed": self.seed,
                "config": method.config.to_dict()}

    @property
    def key(self) -> str:
        d = "+".join(f"{x * 100:g}" for x in sorted(self.doses))
        a = "+".join(sorted(self.anatomies))
        key = f"{self.profile}-{self.data}-seen{d}-{a}-s{self.seed}"
        if self.overrides:
            blob = json.dumps(self.overrides, sort_keys=True, default=str).encode()
            key += f"-set{hashlib.sha256(blob).hexdigest()[:8]}"
        return key


def committed_checkpoints(method: str) -> list[Path]:
    """The reference weights committed for `method` under results/checkpoints (one folder per training job)."""
    return sorted((REFERENCE_DIR / method).glob("*/weights.safetensors"))


def candidates(job: TrainJob, cache_dir: Path | None = None) -> list[Path]:
    cache = Path(cache_dir or default_cache_dir()) / "checkpoints"
    return [REFERENCE_DIR / job.method / job.key, cache / job.method / job.key]


def find_checkpoint(job: TrainJob, cache_dir: Path | None = None) -> Path | None:
    """The first complete checkpoint (weights.safetensors present) of `job`, or None."""
    for d in candidates(job, cache_dir):
        if (d / "weights.safetensors").is_file():
            return d / "weights.safetensors"
    return None


def training_dir(job: TrainJob, cache_dir: Path | None = None) -> Path:
    """Where `job` trains when no folder is given: the user's cache."""
    return candidates(job, cache_dir)[1]


def training_domain(weights: Path) -> dict | None:
    """What the model at `weights` was trained on of acquisition (pixel sizes, acquisitions, kernels; see
    LDCTDataset.domain): from the training manifest beside it, or, for a manifest written before domains were
    recorded, from the embedded dataset its key names; None where neither says."""
    import json

    from .data.acquisition import ACQUISITIONS
    from .data.resolve import phantoms_for
    from .methods import training_record

    record = training_record(weights)
    try:
        manifest = json.loads(record.read_text()) if record is not None else {}
    except (OSError, ValueError):
        return None
    if isinstance(manifest.get("domain"), dict):
        return manifest["domain"]
    for name, acq in ACQUISITIONS.items():  # the embedded phantoms at the default size, through a profile
        if phantoms_for(f"embedded@{name}").dataset_name == manifest.get("data"):
            return {"pixel_mm": [acq.pixel_mm, acq.pixel_mm], "acquisitions": [name], "kernels": [acq.kernel.name]}
    return None


def outside_domain(domain: dict | None, pixel_mm: float, kernel: str | None = None, tolerance: float = 0.2) -> str:
    """Why an image lies outside a model's training `domain` ('' when inside, or nothing is known): its pixel size
    more than `tolerance` beyond the range the model saw, or a reconstruction kernel (as its header names it) that
    none of the model's training images had. Kernels are compared only with kernels read from headers: the
    simulator's are not named as vendors name theirs."""
    from .data.acquisition import KERNELS

    why = []
    seen = (domain or {}).get("pixel_mm")
    if seen and pixel_mm and not (1 - tolerance) * seen[0] <= pixel_mm <= (1 + tolerance) * seen[1]:
        lo, hi = seen
        trained = f"{lo:.2f} mm" if abs(hi - lo) < 1e-6 else f"{lo:.2f}-{hi:.2f} mm"
        why.append(f"{pixel_mm:.2f} mm pixels, outside the {trained} it was trained at")
    kernels = set((domain or {}).get("kernels") or ()) - {"?"}
    if kernel and kernels and not kernels & set(KERNELS) and kernel not in kernels:
        why.append(f"kernel {kernel}, which none of its training images had ({', '.join(sorted(kernels))})")
    return "; ".join(why)
