#!/usr/bin/env bash
# Where a frame step goes on a GPU: builds deltajax with CUDA, times a dense frame and delta steps with no
# change and with the clip's change (bfloat16 and float32 default), with the kernels of one still and one
# moving step from the JAX profiler's trace (benchmarks/profile_step.py); then, under the benchmarks' best XLA
# flags, the end-to-end benchmark's two programs over a 20-frame clip of one stream (dense lax.map, delta
# run_clip): per frame, their kernels and the device's gaps.
# Usage: scripts/profile_step.sh OUTDIR [benchmarks.profile_step arguments, e.g. --thresholds FILE]
set -uo pipefail
OUTDIR=$1
shift
mkdir -p "$OUTDIR"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
source scripts/gpu_setup.sh

build_cuda || exit 1
prof=($PY -m benchmarks.profile_step "$@")
step time_bf16 150 "${prof[@]}" --precision bf16 --clip-stats --trace "$OUTDIR/trace_bf16" \
  --out "$OUTDIR/time_bf16.json"
step time_f32_default 120 "${prof[@]}" --precision f32_default --trace "$OUTDIR/trace_f32_default" \
  --out "$OUTDIR/time_f32_default.json"
XLA_FLAGS="${XLA_FLAGS:-} $BEST_XLA_FLAGS" step clip_bf16 150 "${prof[@]}" --precision bf16 --streams 1 \
  --frames 20 --clip-trace "$OUTDIR/clip_trace_bf16" --out "$OUTDIR/clip_bf16.json"
exit $status
