"""The machine: which device to compute on, and what a result was made on (hardware, package versions, git commit),
recorded in every manifest."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch


def resolve_device(spec: str) -> str:
    """`--device`: auto (CUDA when there is one, else the CPU), cpu or cuda[:N]; one clear error otherwise."""
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {spec}: CUDA is not available on this machine; use --device cpu or auto.")
    if not (spec == "cpu" or spec.startswith("cuda")):
        raise ValueError(f"--device {spec!r} is not a device; use auto, cpu or cuda[:N].")
    return spec


def hardware(device: str = "cpu") -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device),
            "gpu": torch.cuda.get_device_name(0) if str(device).startswith("cuda") else None}


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("ldct-bench", "torch", "numpy", "numba", "pandas", "scikit-image", "piq", "pydicom", "mamba-ssm"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The checkout's commit, or $LDCT_BENCH_GIT_COMMIT where it is set: a copy of the tree sent to another machine
    (a container, a GPU node) may carry no .git, or one that is not the code's."""
    if os.environ.get("LDCT_BENCH_GIT_COMMIT"):
        return os.environ["LDCT_BENCH_GIT_COMMIT"]
    try:
        found = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                               text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        found = ""
    return found or None
