#!/usr/bin/env bash
# Installs the wheels of WHEELDIR (from scripts/build_wheels.sh) into a fresh virtualenv on a PATH without
# compilers or build tools (gcc, g++, cc, c++, clang, nvcc, cmake, ninja), with binary wheels only for every
# dependency, and runs scripts/wheel_smoke.py (smoke test + a short exactness test) from outside the
# repository. A deltajax-cuda13 wheel there is installed too and must import (static cudart: no GPU needed).
# Usage: scripts/wheel_check.sh WHEELDIR   (needs the package index for jax, flax, ... unless pip's cache has them)
set -euo pipefail
wheels=$(realpath "${1:?usage: scripts/wheel_check.sh WHEELDIR}")
repo=$(realpath "$(dirname "$0")/..")
PY=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# PATH without compilers: links to every other program on PATH, first one of each name
mkdir "$scratch/bin"
IFS=: read -ra path_dirs <<<"$PATH"
for dir in "${path_dirs[@]}"; do
  for program in "$dir"/*; do
    name=${program##*/}
    [ -x "$program" ] && [ ! -e "$scratch/bin/$name" ] || continue
    case $name in
      gcc* | g++* | cc | c++ | c89 | c99 | *-gcc* | *-g++* | clang* | nvcc | cmake | ninja) ;;
      *) ln -s "$program" "$scratch/bin/$name" ;;
    esac
  done
done
"$PY" -m venv "$scratch/venv"
export PATH="$scratch/venv/bin:$scratch/bin"
unset PYTHONPATH CUDACXX
for tool in gcc g++ cc c++ nvcc cmake; do
  ! command -v "$tool" >/dev/null || { echo "wheel_check.sh: $tool is still on PATH" >&2; exit 1; }
done

cd "$scratch"
python -m pip install -q --upgrade pip
python -m pip install -q --no-compile --only-binary :all: "$wheels"/deltajax-[0-9]*.whl
python "$repo/scripts/wheel_smoke.py" --platform cpu
if ls "$wheels"/deltajax_cuda13-*.whl >/dev/null 2>&1; then
  python -m pip install -q --no-compile --only-binary :all: --no-deps "$wheels"/deltajax_cuda13-*.whl
  python -c "import deltajax._native as n, deltajax._cuda; print('deltajax._cuda imports;', n.describe())"
fi
