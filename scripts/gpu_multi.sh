#!/usr/bin/env bash
# Streams over several GPUs: benchmarks.multi_device on every GPU of the machine (device counts 1, 2, 4, 8 as
# there are GPUs; 768x432 and 1920x1080; dense XLA sharded the same way in the same run), then the sharding tests
# on the GPUs. Builds deltajax with CUDA first unless the CUDA module already imports. Works offline. Writes
# OUTDIR/multi_device.json (rows written as they finish, so a run cut short keeps what it measured),
# OUTDIR/multi_device.md (the table), the logs and OUTDIR/summary.txt.
# Usage: scripts/gpu_multi.sh OUTDIR [SECONDS: the whole run's time limit, default 450] [benchmark arguments]
set -uo pipefail
OUTDIR=$1
LIMIT=${2:-450}
shift $(($# > 1 ? 2 : 1))
mkdir -p "$OUTDIR"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
deadline=$((SECONDS + LIMIT))
source scripts/gpu_setup.sh

$PY -c "import deltajax._cuda" 2>/dev/null || build_cuda || exit 1
export XLA_FLAGS="${XLA_FLAGS:-} $BEST_XLA_FLAGS"
left() { local s=$((deadline - SECONDS - $1)); echo $((s > 10 ? s : 10)); }  # seconds left, keeping $1 (timeout 0: none)
# The benchmark gets what is left but 60 s, kept for the sharded tests on the GPUs.
step multi_device "$(left 60)" $PY -m benchmarks.multi_device \
  --out "$OUTDIR/multi_device.json" --markdown "$OUTDIR/multi_device.md" "$@"
cat "$OUTDIR/multi_device.md" 2>/dev/null
step sharding_tests "$(left 0)" $PY -m pytest -q -p no:cacheprovider tests/test_sharding.py
exit $status
