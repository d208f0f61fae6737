"""Where trained weights live: committed reference checkpoints first, then the user's cache.

A checkpoint folder is named by everything that makes it: method, profile, dataset (its
directory name carries the data config hash), seen doses, anatomies and seed.
"""

from __future__ import annotations

from pathlib import Path

from .data.dataset import default_cache_dir

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "results" / "checkpoints"


def checkpoint_key(profile: str, data: str, doses, anatomies, seed: int = 0) -> str:
    d = "+".join(f"{x * 100:g}" for x in sorted(doses))
    a = "+".join(sorted(anatomies))
    return f"{profile}-{data}-seen{d}-{a}-s{seed}"


def candidates(method: str, key: str, cache_dir: Path | None = None) -> list[Path]:
    return [REFERENCE_DIR / method / key, Path(cache_dir or default_cache_dir()) / "checkpoints" / method / key]


def find_checkpoint(method: str, key: str, cache_dir: Path | None = None) -> Path | None:
    """The first complete checkpoint (weights.safetensors present) for method/key, or None."""
    for d in candidates(method, key, cache_dir):
        if (d / "weights.safetensors").is_file():
            return d / "weights.safetensors"
    return None


def training_dir(method: str, key: str, cache_dir: Path | None = None) -> Path:
    return candidates(method, key, cache_dir)[1]
