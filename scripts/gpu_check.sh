#!/usr/bin/env bash
# Builds deltajax with CUDA, runs the whole test suite on the GPU (GPU tests required), the CUDA tests
# under compute-sanitizer (memcheck, racecheck), and the kernel benchmark. Logs and JSON go to OUTDIR.
# Usage: scripts/gpu_check.sh [OUTDIR]   (needs a GPU, jax with CUDA, a CUDA toolkit; no network)
set -uo pipefail
OUTDIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUTDIR"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 DELTAJAX_REQUIRE_GPU=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
status=0
step() {  # step NAME COMMAND...: runs one step, logs to OUTDIR/NAME.log, records failure
  local name=$1; shift
  local t0=$SECONDS
  "$@" >"$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc ($((SECONDS - t0)) s)" | tee -a "$OUTDIR/summary.txt"
  [ $rc -eq 0 ] || { status=1; tail -n 40 "$OUTDIR/$name.log"; }
  return $rc
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1
  $PY -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"; } \
  | tee "$OUTDIR/device.txt"

step build env DELTAJAX_CUDA=ON $PY -m pip install --no-build-isolation --no-deps -v -e . \
  -Ccmake.define.DELTAJAX_CUDA_ARCHITECTURES=90 || { echo "build failed"; exit 1; }
step native $PY -c "import deltajax._native as n; print(n.describe()); assert 'cuda' in n.native_platforms()"
step tests $PY -m pytest -q -x -p no:cacheprovider tests --junitxml="$OUTDIR/tests.xml"
if ls tests/test_cuda*.py >/dev/null 2>&1; then
  for tool in memcheck racecheck; do
    step "sanitize_$tool" compute-sanitizer --tool "$tool" --error-exitcode 99 \
      $PY -m pytest -q -x -p no:cacheprovider -m sanitize tests/
  done
fi
if [ -f benchmarks/kernels.py ]; then
  step benchmark $PY -m benchmarks.kernels --device gpu --out "$OUTDIR/kernels.json"
  tail -n 80 "$OUTDIR/benchmark.log"
fi
cat "$OUTDIR/summary.txt"
exit $status
