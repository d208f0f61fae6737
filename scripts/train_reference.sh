#!/usr/bin/env bash
# The reference checkpoints that transfer (#30.3, #31.2): every learned method trained as a generalist on the clinical
# phantoms (the realistic anatomy on the scanner's table) through every acquisition profile (pixels 0.55-1.37 mm,
# smooth/standard/sharp kernels, two geometries), every anatomy, seen doses 10 and 50 %, quick profile, seed 0, each
# stage to its validation plateau or its cap.
#
#     bash scripts/train_reference.sh [DEADLINE_S] [--device cuda]   (default 540 s: one device command's limit)
#
# PHANTOMS picks the anatomy model (default clinical, the default run's), METHODS the methods, DEST
# where complete checkpoints go (default results/checkpoints: the ones the default run and `denoise` find).
#
# One prepared script for a lent GPU, and the same on the CPU in the background across sessions: each method trains
# in the cache (resumable bit for bit) with what is left of DEADLINE_S as its --time-budget, in turn (two trainings
# sharing 2 cores each run ~10x slower); a method that completes is copied into results/checkpoints/<method>/<key>
# (weights, manifest, train_log.csv; not state.pt), where the default run, `denoise` and the tests find it. Every
# step is logged, with the time, to results/checkpoints/train_reference.log.
set -euo pipefail
cd "$(dirname "$0")/.."
deadline=$(( $(date +%s) + ${1:-540} ))
shift || true
data="embedded@default,ge,smooth,sharp,dfov180,dfov140"
phantoms=${PHANTOMS:-clinical}
dest_root=${DEST:-results/checkpoints}
log=results/checkpoints/train_reference.log
say() { echo "$(date -u +%FT%TZ) $*" | tee -a "$log"; }
say "start: deadline in $(( deadline - $(date +%s) )) s; data $data, $phantoms phantoms; extra args: $*"
for m in ${METHODS:-redcnn corediff wgan-mse founddiff bilateral dncnn restormer}; do
  left=$(( deadline - $(date +%s) - 20 ))
  if [ "$left" -lt 30 ]; then say "$m: no time left; run again to resume"; continue; fi
  say "$m: training with a budget of $left s"
  ldct-bench train --method "$m" --profile quick --doses 10,50 --anatomies head,chest,abdomen --seed 0 \
    --phantoms "$phantoms" --data "$data" --time-budget "$left" "$@" 2>>"$log.err" | tee -a "$log"
  dir=$(python - "$m" "$data" "$phantoms" <<'PY'
import sys
from ldct_bench.checkpoints import TrainJob, training_dir
from ldct_bench.data.dataset import PhantomConfig
from ldct_bench.data.resolve import dataset_name
name = dataset_name(sys.argv[2], phantoms=PhantomConfig(anatomy_model=sys.argv[3]))
print(training_dir(TrainJob(sys.argv[1], "quick", (0.1, 0.5), ("head", "chest", "abdomen"), name, 0, {})))
PY
)
  if [ -f "$dir/weights.safetensors" ]; then
    dest="$dest_root/$m/$(basename "$dir")"
    rm -rf "${dest_root:?}/$m" # one committed checkpoint a method
    mkdir -p "$dest" && cp "$dir"/weights.safetensors "$dir"/manifest.json "$dir"/train_log.csv "$dest"/
    say "$m: complete; copied to $dest"
  else
    say "$m: stopped by the deadline (state kept in $dir); run again to resume"
  fi
done
say "end"
