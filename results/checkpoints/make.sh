#!/usr/bin/env bash
# Reproduces the committed reference checkpoints of the embedded benchmark (quick profile,
# generalist: all anatomies, seen doses 10% and 50%, seed 0). Each stage trains until its validation
# PSNR plateaus (< 0.05 dB gained over the last fifth of its steps) or reaches the profile's cap.
# Each folder gets weights.safetensors, manifest.json (config, data version, steps per stage, patches
# seen, training FLOPs, validation curve, which stages plateaued, wall time, hardware, sha256) and
# train_log.csv. Methods train one after another: two trainings sharing 2 cores each ran ~10x slower.
set -euo pipefail
cd "$(dirname "$0")/../.."
KEY=$(python -c "from ldct_bench.checkpoints import TrainJob; from ldct_bench.data.dataset import PhantomConfig; print(TrainJob('', 'quick', (0.1, 0.5), ('head', 'chest', 'abdomen'), 'embedded-' + PhantomConfig().digest()).key)")
for m in ${METHODS:-redcnn corediff wgan-mse founddiff}; do
  ldct-bench train --method "$m" --profile quick --doses 10,50 --anatomies head,chest,abdomen --seed 0 \
    --out "results/checkpoints/$m/$KEY" "$@"
  rm -f "results/checkpoints/$m/$KEY/state.pt"
done
