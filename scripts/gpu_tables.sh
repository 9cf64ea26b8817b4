#!/usr/bin/env bash
# Re-measures one of the README's GPU tables on a GPU machine, in a part that fits the machine's 10 minutes a
# command: builds deltajax with CUDA (scripts/gpu_setup.sh's build_cuda; quick when the build folder is kept), runs
# the benchmark under the benchmarks' best XLA flags on both sides, and writes its JSON and log to OUTDIR.
# Usage: scripts/gpu_tables.sh OUTDIR PART   (carry the weights in .whl/: scripts/offline_weights.sh)
# PART:
#   frame-modes-768x432    the dense-tail table's 768x432 rows (benchmarks.crossover, EfficientNet-Lite0, bf16,
#                          threshold 0, tails none / 16 / 32), with one step's kernels traced per row
#   frame-modes-1080x1920  its 1080x1920 rows (tails none / 8 / 16)
#   dense-prediction       the dense-prediction table (super-resolution and pose, person clip, bf16 and TF32)
#   classifiers            EfficientNet-Lite0 and MobileNetV2 on the person clip, bf16, 1x768x432 and 1x1920x1080
set -uo pipefail
OUTDIR=${1:?usage: scripts/gpu_tables.sh OUTDIR PART}
PART=${2:?usage: scripts/gpu_tables.sh OUTDIR PART}
mkdir -p "$OUTDIR"
OUTDIR=$(realpath "$OUTDIR")
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
FRACTIONS=0,0.01,0.03,0.1,0.3,1
PERSON=deltajax/data/one-by-one-person-detection.mp4

crossover() {  # NAME HxW TAILS [more arguments]: OUTDIR/crossover_dense_tail_NAME.json, in what is left of 575 s
  local name=$1 size=$2 tails=$3
  shift 3
  XLA_FLAGS="${XLA_FLAGS:-} $BEST_XLA_FLAGS" step "crossover_$name" $((575 - SECONDS)) $PY -m benchmarks.crossover \
    --models efficientnet_lite0 --precisions bf16 --size "$size" --fractions $FRACTIONS --dense-from-stride "$tails" \
    --out "$OUTDIR/crossover_dense_tail_$name.json" "$@"
  tail -n 30 "$OUTDIR/crossover_$name.log"
}

case $PART in
  frame-modes-768x432 | frame-modes-1080x1920)
    source scripts/gpu_setup.sh
    build_cuda || exit 1
    if [ "$PART" = frame-modes-768x432 ]; then
      crossover 768x432 432x768 none,16,32 --trace "$OUTDIR/trace"
      rm -rf "$OUTDIR/trace"  # each row keeps its step's kernels; the raw traces are large
    else
      crossover 1080x1920 1080x1920 none,8,16
    fi
    exit $status ;;
  dense-prediction)
    MODELS="superres pose" VIDEOS=$PERSON exec scripts/gpu_e2e.sh "$OUTDIR" 530 --frames 20 \
      --precisions bf16,f32_default --cases 1x480x270,1x1920x1080 ;;
  classifiers)
    MODELS="efficientnet_lite0 mobilenet_v2" VIDEOS=$PERSON exec scripts/gpu_e2e.sh "$OUTDIR" 530 --frames 20 \
      --precisions bf16 --cases 1x768x432,1x1920x1080 ;;
  *)
    echo "gpu_tables.sh: PART must be frame-modes-768x432, frame-modes-1080x1920, dense-prediction or" \
      "classifiers, got '$PART'" >&2
    exit 2 ;;
esac
