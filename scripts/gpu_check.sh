#!/usr/bin/env bash
# Builds deltajax with CUDA, runs the whole test suite on the GPU (GPU tests required), the CUDA tests
# under compute-sanitizer (memcheck, racecheck), and the kernel benchmark. Logs and JSON go to OUTDIR.
# Usage: scripts/gpu_check.sh [OUTDIR]   (needs a GPU, jax with CUDA, a CUDA toolkit; no network)
# Every step has a time limit so the whole check ends within 9 minutes on an H100; GPU_CHECK_FULL_BENCH=1
# runs the full benchmark presets instead of the quick ones (much longer).
set -uo pipefail
OUTDIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUTDIR"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 DELTAJAX_REQUIRE_GPU=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
status=0
step() {  # step NAME SECONDS COMMAND...: runs one step under a time limit, logs to OUTDIR/NAME.log
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc ($((SECONDS - t0)) s)" | tee -a "$OUTDIR/summary.txt"
  [ $rc -eq 0 ] || { status=1; tail -n 40 "$OUTDIR/$name.log"; }
  return $rc
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1
  $PY -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"; } \
  | tee "$OUTDIR/device.txt"

step build 150 env DELTAJAX_CUDA=ON $PY -m pip install --no-build-isolation --no-deps -v -e . \
  -Ccmake.define.DELTAJAX_CUDA_ARCHITECTURES=90 || { echo "build failed"; exit 1; }
step native 60 $PY -c "import deltajax._native as n; print(n.describe()); assert 'cuda' in n.native_platforms()"
step tests 240 $PY -m pytest -q -x -p no:cacheprovider tests --junitxml="$OUTDIR/tests.xml"
if ls tests/test_cuda*.py >/dev/null 2>&1; then
  # --report-api-errors no: cuDNN probes stream capture during XLA's autotuning and reports API errors
  # (cudaErrorStreamCaptureInvalidated) that are not memory errors; racecheck is slow, so a subset runs there.
  step sanitize_memcheck 90 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 99 \
    $PY -m pytest -q -x -p no:cacheprovider -m sanitize tests/test_cuda.py
  step sanitize_racecheck 120 compute-sanitizer --tool racecheck --report-api-errors no --error-exitcode 99 \
    $PY -m pytest -q -x -p no:cacheprovider -m sanitize tests/test_cuda.py -k "float32 and (gemm or depthwise)"
fi
quick=--quick
[ "${GPU_CHECK_FULL_BENCH:-0}" = 1 ] && quick=
step bench_conv 150 $PY -m benchmarks.conv_cuda $quick --out "$OUTDIR/conv_cuda.json"
grep -E "x[0-9]" "$OUTDIR/bench_conv.log" | cut -c1-160
if [ -f benchmarks/kernels.py ]; then
  step bench_kernels 120 $PY -m benchmarks.kernels --preset gpu $quick --out "$OUTDIR/kernels.json"
  tail -n 30 "$OUTDIR/bench_kernels.log"
fi
cat "$OUTDIR/summary.txt"
exit $status
