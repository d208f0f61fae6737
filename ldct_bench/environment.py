"""The machine: which device to compute on, how the process uses its memory, and what a result was made on (hardware,
package versions, git commit), recorded in every manifest."""

from __future__ import annotations

import ctypes
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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Have the C allocator keep freed blocks up to `limit_bytes` for reuse instead of returning them to the kernel.

    glibc maps every allocation above its mmap threshold (32 MB at most) straight from the kernel and unmaps it on
    free, so each large tensor a network makes is page-faulted in afresh, page by page: FoundDiff's CPU inference spent
    15 s of a 29 s profile in the kernel (10.6 M minor page faults for 32 slices), 0.83 s per slice. With freed blocks
    reused it takes 0.61 s per slice and 1.9 s of system time, for 0.9 GB more peak RSS. PyTorch's CPU tuning guide
    gets the same by preloading jemalloc or tcmalloc; this does it in-process. Returns False where the C library has
    no mallopt (not glibc), which changes nothing."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, limit_bytes)) and bool(mallopt(M_TRIM_THRESHOLD, limit_bytes))


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
