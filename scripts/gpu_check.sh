#!/usr/bin/env bash
# The GPU checks, in one pass that fits a ten-minute slot on one NVIDIA GPU:
#   1. the GPU tests (pytest -m gpu): CUDA FBP against numba within 0.5 HU, and one FoundDiff checkpoint through the
#      GPU scans; first with the pure-PyTorch scan, then again with mamba-ssm's fused kernel (whose own test joins);
#   2. mamba-ssm's kernel: imported if installed; else built for this GPU alone from the unpacked source distribution
#      in $MAMBA_SOURCE (scripts/build_mamba_kernel.py, in the background while the steps without it run); else
#      pip-installed;
#   3. `ldct-bench bench --device cuda --size 512`: the paper profile's FoundDiff with the pure-PyTorch scan (training
#      it/s of both stages, inference ms/slice); then, with mamba-ssm's kernel where it is there, the quick profile
#      (simulation on the GPU vs numba, inference and training of every method) and the paper profile of every method.
# Each step runs whether or not the one before passed, with its log and exit status in OUT (default
# results/bench/cuda-<date>); no step runs past $GPU_CHECK_DEADLINE seconds (default 500) from the start.
# Usage: scripts/gpu_check.sh [OUT]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/bench/cuda-$(date +%Y%m%d)}
deadline=${GPU_CHECK_DEADLINE:-500}
kernel=${KERNEL_DIR:-/tmp/selective_scan_cuda}
mkdir -p "$out"
py=python3
export PATH="$(dirname "$($py -c 'import sys; print(sys.executable)')"):$PATH"  # ninja, beside the interpreter
export PYTHONUNBUFFERED=1
gpu_tests=(tests/test_physics.py tests/test_founddiff.py)  # the modules with tests marked gpu

step() {  # step NAME COMMAND...: run it until the deadline, log to OUT/NAME.log, record its exit status and time
    local name=$1 t0=$SECONDS rc
    shift
    if (( SECONDS >= deadline )); then echo "$name skipped: past ${deadline} s" | tee -a "$out/steps.txt"; return; fi
    echo "== $name: $*"
    timeout $((deadline - SECONDS)) "$@" >"$out/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc $((SECONDS - t0)) s (at $SECONDS s)" | tee -a "$out/steps.txt"
    tail -n 12 "$out/$name.log"
}
bench=("$py" -m ldct_bench bench --device cuda --size 512)
has_mamba() {  # as FoundDiff loads it (past a failing mamba-ssm package __init__, founddiff/selective_scan.py)
    $py -c "import sys; from founddiff.selective_scan import mamba_available; sys.exit(not mamba_available())"
}

$py -c "import ldct_bench" 2>/dev/null || $py -m pip install -q -e ".[test]"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"

build_pid=""
if ! has_mamba; then
    if [ -n "${MAMBA_SOURCE:-}" ]; then
        setsid $py scripts/build_mamba_kernel.py "$MAMBA_SOURCE" "$kernel" >"$out/build_kernel.log" 2>&1 &
        build_pid=$!
    else
        $py -m pip install -q "mamba-ssm>=2.0" >"$out/build_kernel.log" 2>&1
    fi
fi

# without mamba-ssm (not yet on the path while it builds)
step tests_torch_scan $py -m pytest -m gpu -p no:cacheprovider -rs "${gpu_tests[@]}"
step paper_founddiff_torch_scan "${bench[@]}" --profile paper --methods founddiff --stages inference,training \
    --out "$out/paper-founddiff-torch-scan"

if [ -n "$build_pid" ]; then
    while kill -0 "$build_pid" 2>/dev/null && (( SECONDS < deadline - 240 )); do sleep 5; done
    if kill -0 "$build_pid" 2>/dev/null; then
        kill -- "-$build_pid" 2>/dev/null
        echo "build_kernel stopped at $SECONDS s, not finished" | tee -a "$out/steps.txt"
    fi
    wait "$build_pid"
    echo "build_kernel rc=$? (at $SECONDS s)" | tee -a "$out/steps.txt"
    tail -n 5 "$out/build_kernel.log"
    export PYTHONPATH="$MAMBA_SOURCE:$kernel${PYTHONPATH:+:$PYTHONPATH}"
fi
if has_mamba; then
    step tests_mamba $py -m pytest -m gpu -p no:cacheprovider -rs "${gpu_tests[@]}"
else
    echo "mamba-ssm unavailable; the steps below use the pure-PyTorch scan" | tee -a "$out/steps.txt"
    $py -c "import mamba_ssm.ops.selective_scan_interface" 2>&1 | tail -n 2 | tee -a "$out/steps.txt"  # why
fi
step quick "${bench[@]}" --profile quick --stages simulation,inference,training --out "$out/quick"
step paper "${bench[@]}" --profile paper --stages inference,training --out "$out/paper"
