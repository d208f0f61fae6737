#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and a CUDA toolchain: install mamba-ssm (the `cuda` extra), check its fused
# selective scan and a FoundDiff checkpoint against the pure-PyTorch fallback (the tests marked `gpu`), then
# profile every stage on the GPU. CPU-only machines skip those tests; this is where they run.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test,cuda]"
python -m pytest -m gpu -p no:cacheprovider tests/ -rs
ldct-bench bench --device cuda --size 512 --out "results/bench/cuda-512-$(date +%Y%m%d)"
