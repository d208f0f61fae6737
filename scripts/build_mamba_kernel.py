"""Build mamba-ssm's fused selective-scan kernel (`selective_scan_cuda`) for this machine's GPU alone.

    python scripts/build_mamba_kernel.py SOURCE_DIR TARGET_DIR

SOURCE_DIR is an unpacked mamba-ssm source distribution (2.2.5 or later ships its CUDA sources); TARGET_DIR receives
`selective_scan_cuda.so`. Put both on PYTHONPATH and `mamba_ssm.ops.selective_scan_interface` imports.

Why: `pip install mamba-ssm` downloads a prebuilt wheel from GitHub, and without network it compiles the kernel for
every architecture it supports (a dozen, half an hour and more). A machine with no network (a cluster node, our device
machine) only needs its own GPU's architecture, which takes minutes. The sources, flags and module name are mamba-ssm's
own; only the architecture list differs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.cpp_extension import load

NVCC_FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math",
              *(f"-U__CUDA_NO_{kind}_{what}__" for kind in ("HALF", "BFLOAT16", "BFLOAT162")
                for what in ("OPERATORS", "CONVERSIONS"))]


def main(source: Path, target: Path) -> None:
    csrc = source / "csrc" / "selective_scan"
    kernels = sorted(str(p) for p in csrc.glob("selective_scan_*.cu"))  # forward and backward, per dtype
    sources = [str(csrc / "selective_scan.cpp"), *kernels]
    if not kernels:
        sys.exit(f"{csrc} holds no CUDA sources; unpack a mamba-ssm source distribution of 2.2.5 or later there.")
    if not torch.cuda.is_available():
        sys.exit("no CUDA device here: the kernel is built for the GPU of the machine that runs this script.")
    major, minor = torch.cuda.get_device_capability()
    os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"  # torch's extension builder reads the targets from it
    os.environ.setdefault("MAX_JOBS", str(len(sources)))
    target.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    load("selective_scan_cuda", sources, extra_cflags=["-O3", "-std=c++17"], extra_cuda_cflags=NVCC_FLAGS,
         extra_include_paths=[str(csrc)], build_directory=str(target), verbose=False)
    print(f"built selective_scan_cuda for sm_{major}{minor} into {target} in {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
