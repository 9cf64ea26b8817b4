#!/usr/bin/env bash
# Builds the deltajax and deltajax-cuda13 wheels from this checkout and installs them (scripts/gpu_setup.sh's
# install_wheels; everything after runs from the wheels), runs the whole test suite on the GPU (GPU tests
# required), the CUDA tests under compute-sanitizer (memcheck, racecheck), the 10 000-frame soak, and the
# end-to-end benchmark (GPU_CHECK_FULL_BENCH=1: the full end-to-end and kernel benchmarks). Logs and JSON go to
# OUTDIR.
# Usage: scripts/gpu_check.sh [OUTDIR]   (needs a GPU, jax with CUDA, a CUDA toolkit; no network)
# Every step has a time limit so the whole check ends within the GPU machine's 10 minutes per command on an H200
# (wheels and smoke test ~1, soak ~2, suite and sanitizers side by side ~5, end-to-end benchmark ~1.5);
# GPU_CHECK_FULL_BENCH=1 runs the full benchmark presets instead (much longer).
set -uo pipefail
OUTDIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUTDIR"
OUTDIR=$(realpath "$OUTDIR")  # the steps after install_wheels run in another folder
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export DELTAJAX_REQUIRE_GPU=1
source scripts/gpu_setup.sh

install_wheels || { echo "wheel build or install failed"; exit 1; }
step wheel_smoke 120 $PY scripts/wheel_smoke.py --platform cuda
step native 60 $PY -c "import deltajax._native as n; print(n.describe()); assert 'cuda' in n.native_platforms()"
# XLA's autotuning of the dense references launches many kernels of its own and costs compile time; the
# tests and the sanitizers run without it (the benchmarks below run with it).
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_autotune_level=0"
sanitize() {  # memcheck, then racecheck, of the small CUDA cases; its exit status is the first failure's
  local rc=0
  # --report-api-errors no: cuDNN probes stream capture during XLA's autotuning and reports API errors
  # (cudaErrorStreamCaptureInvalidated) that are not memory errors. Racecheck instruments only deltajax's
  # kernels (--kernel-name kns=deltajax): XLA's own kernels under racecheck take minutes.
  step sanitize_memcheck 150 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 99 \
    $PY -m pytest -q -x -p no:cacheprovider -m sanitize tests/test_cuda.py || rc=1
  racecheck=(compute-sanitizer --tool racecheck --kernel-name kns=deltajax --report-api-errors no --error-exitcode 99)
  if ! step sanitize_racecheck 150 "${racecheck[@]}" $PY -m pytest -q -p no:cacheprovider -m sanitize tests/test_cuda.py
  then  # a hazard (rc 99) or the tool itself failing: one process per case says which
    rc=1
    for case in $($PY -m pytest -q --collect-only -m sanitize tests/test_cuda.py 2>/dev/null | grep '::'); do
      timeout 60 "${racecheck[@]}" $PY -m pytest -q -p no:cacheprovider "$case" >>"$OUTDIR/sanitize_racecheck.log" 2>&1
      echo "  racecheck $case: rc=$?" | tee -a "$OUTDIR/summary.txt"
    done
  fi
  return $rc
}
# The soak (error over 10 000 frames of EfficientNet-Lite0 at 384x216, TF32 and bf16) runs alone: beside the
# suite's processes, which share the card by time slices, its 20 000 small steps took minutes. The sanitizers
# run beside the suite: the suite's workers leave them two cores.
step soak 240 $PY -m benchmarks.soak --preset gpu --json "$OUTDIR/soak.json" --markdown "$OUTDIR/soak.md" \
  --png "$OUTDIR/soak.png"
cat "$OUTDIR/soak.md"
sanitize &
sanitizers=$!
step tests 330 $PY -m pytest -q -n 12 -p no:cacheprovider tests --durations=15
wait $sanitizers || status=1
export XLA_FLAGS="${XLA_FLAGS% --xla_gpu_autotune_level=0} $BEST_XLA_FLAGS"
full_bench=${GPU_CHECK_FULL_BENCH:-0}
if [ "$full_bench" = 1 ]; then
  e2e=(--preset gpu) e2e_limit=1800
else  # one row: what fits in the machine's 10 minutes beside the rest
  e2e=(--preset gpu --frames 20 --models efficientnet_lite0 --cases 1x768x432 --precisions bf16
       --video deltajax/data/one-by-one-person-detection.mp4)
  e2e_limit=150
fi
step bench_e2e "$e2e_limit" $PY -m benchmarks.end_to_end "${e2e[@]}" --out "$OUTDIR/end_to_end.json"
grep -v cuda_timer "$OUTDIR/bench_e2e.log" | tail -n 12
if [ "$full_bench" = 1 ]; then
  step bench_kernels 1800 $PY -m benchmarks.kernels --preset gpu --out "$OUTDIR/kernels.json"
  tail -n 30 "$OUTDIR/bench_kernels.log"
fi
cat "$OUTDIR/summary.txt"
exit $status
