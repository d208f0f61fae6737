#!/usr/bin/env bash
# Every committed run under results/runs made again, with its one report, from the committed reference checkpoints:
# run this after they change (#30), then `python -m ldct_bench.report.site` for the README's leaderboard. Each run's
# own manifest records the command that made it; these are those commands, in one place.
#
#     bash scripts/remake_runs.sh [RUN ...]   (default, in this order: reference loao-abdomen ctsmall acquisition
#                                              acquisition-loao)
#
# A run folder is removed before it is made again (a run refuses a folder made with another identity). Runs that
# train (loao-abdomen, acquisition-loao) resume their trainings from the cache, so an interrupted remake is run
# again. Every command and its wall time go to results/runs/remake.log.
#
# KEEP=1 keeps the folders: the same commands then score again only the methods whose checkpoint changed since the
# folder was made (the run compares sha256s and lists what it replaced under 'rescored' in its manifest), and remake
# the reports. That is the remake after some reference checkpoints are retrained.
set -euo pipefail
cd "$(dirname "$0")/.."
log=results/runs/remake.log
say() { echo "$(date -u +%FT%TZ) $*" | tee -a "$log"; }
step() {  # one command, logged with its wall time
  local t0=$SECONDS
  say "\$ $*"
  "$@"
  say "  done in $(( SECONDS - t0 )) s"
}
fresh() { [ "${KEEP:-0}" = 1 ] || rm -rf "results/runs/$1"; }
formats="--format md,csv,html,latex"
reference() {  # every method that runs here ('every': 'all' and the two too slow for it on a CPU, BM3D and Restormer); WGAN-VGG
  fresh reference  # needs VGG19 weights that cannot be downloaded here
  step ldct-bench run --methods every --doses 5,10,25,50 --out results/runs/reference --iq
  step ldct-bench report results/runs/reference --out results/runs/reference/report $formats
}

loao-abdomen() {  # anatomy axis: abdomen held out of training (both networks trained afresh, 2 000 steps)
  fresh loao-abdomen
  step ldct-bench run --methods ldct,redcnn,corediff --train-anatomies head,chest --doses 5,10,25,50 \
    --set redcnn.iterations=2000 --set corediff.iterations=2000 --out results/runs/loao-abdomen
  step ldct-bench report results/runs/loao-abdomen --out results/runs/loao-abdomen/report $formats
}

ctsmall() {  # dataset axis: pydicom's real CT_small.dcm, scored by the checkpoints trained on the phantoms
  fresh ctsmall
  local dicom
  dicom=$(mktemp -d)
  cp "$(python -c 'from pydicom.data import get_testdata_file; print(get_testdata_file("CT_small.dcm"))')" "$dicom/"
  rm -rf "${LDCT_BENCH_CACHE:-$HOME/.cache/ldct-bench}/ctsmall"
  step ldct-bench data import --source dicom --root "$dicom" --doses 25,10 --anatomy abdomen --name ctsmall
  rm -rf "$dicom"
  step ldct-bench run --methods all --train-data embedded --data ctsmall --doses 10,25 --out results/runs/ctsmall
  step ldct-bench report results/runs/reference results/runs/ctsmall --out results/runs/ctsmall/report $formats
}

acquisition() {  # acquisition axis: the reference checkpoints through every scanner, kernel and display field
  fresh acquisition
  step ldct-bench run --methods all --acquisitions all --out results/runs/acquisition
  step ldct-bench report results/runs/acquisition --out results/runs/acquisition/report $formats
}

acquisition-loao() {  # acquisition axis, unseen: trained on every profile but the 0.55 mm field (dfov140)
  fresh acquisition-loao   # (both networks trained afresh, 2 000 steps, as for loao-abdomen)
  step ldct-bench run --methods ldct,redcnn,corediff --train-acquisitions default,ge,smooth,sharp,dfov180 \
    --set redcnn.iterations=2000 --set corediff.iterations=2000 \
    --acquisitions default,dfov180,dfov140 --out results/runs/acquisition-loao
  step ldct-bench report results/runs/acquisition-loao --out results/runs/acquisition-loao/report --format md,csv
}

runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(reference loao-abdomen ctsmall acquisition acquisition-loao)
for r in "${runs[@]}"; do
  case "$r" in
    reference|loao-abdomen|ctsmall|acquisition|acquisition-loao) say "== $r"; "$r" ;;
    *) echo "remake_runs.sh: unknown run '$r'; choose from reference loao-abdomen ctsmall acquisition acquisition-loao." >&2
       exit 2 ;;
  esac
done
say "== done: now python -m ldct_bench.report.site (the README's leaderboard) and mkdocs build --strict"
