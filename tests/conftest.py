"""Test configuration: GPU requirement on the GPU machine, strict dtype promotion."""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import shutil
import tempfile


def _host_only() -> bool:
    """Whether JAX can run on the host alone (JAX_PLATFORMS=cpu, or no PJRT plugin such as CUDA's installed), read
    before it starts a backend."""
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return True
    plugins = importlib.util.find_spec("jax_plugins")
    return plugins is None or not any(pkgutil.iter_modules(plugins.submodule_search_locations))


# On the host, most of the suite's time is XLA compiling small programs that run briefly, and LLVM's optimization
# passes are a large part of each compile: at -O1 (XLA's default is -O2) the 2-core CPU took 68 s for five
# test_frame_modes tests against 90 s, and the bfloat16 soak (10 000 frames, mostly execution) 74 s against 72 s.
# XLA reads its flags once, when JAX starts a backend: hence here, before anything does. An optimization level
# already in XLA_FLAGS is kept, and runs that can reach a GPU keep XLA's default.
if _host_only() and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=1".strip()

import jax  # noqa: E402  (after XLA_FLAGS)
import pytest  # noqa: E402

from deltajax import _native, backend  # noqa: E402
from deltajax.transform import _frames  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# Oracles in float32 arithmetic: on GPUs the default would be TF32 for plain matmuls in test networks.
jax.config.update("jax_default_matmul_precision", "highest")
# The tests exercise the delta path on every platform: the GPU's measured crossover (0: every changed frame runs
# dense) would turn it off there. tests/test_frame_modes.py sets keyframe_above explicitly.
_frames.AUTO_CROSSOVER["cuda"] = 1.0


# DELTAJAX_TEST_TIMES=FILE: each test's seconds (setup, call and teardown: module fixtures build models) appended to
# FILE as it finishes ("seconds node-id" lines), so that a run cut short by a time limit still tells where its time
# went (scripts/gpu_check.sh).
_times_file: str | None = None
_seconds_so_far: dict[str, float] = {}


def pytest_runtest_logreport(report):
    if not _times_file:
        return
    seconds = _seconds_so_far.pop(report.nodeid, 0.0) + report.duration
    if report.when != "teardown":
        _seconds_so_far[report.nodeid] = seconds
        return
    with open(_times_file, "a") as f:
        f.write(f"{seconds:.2f} {report.nodeid}\n")


# One persistent compilation cache for a run's processes (pytest-xdist's workers inherit the folder from the
# controller, which removes it at the end): programs compiled again by another worker, or after a test's
# jax.clear_caches(), load instead. On the 2-core CPU (-n 2) a cold cache took the whole suite from 836 to 708 s
# (four modules' 89 tests: 143-149 -> 92-114 s). On a GPU its effect is not yet measured apart.
_COMPILATION_CACHE_ENV = "DELTAJAX_TEST_COMPILATION_CACHE"


def _share_compilation_cache(config) -> None:
    folder = os.environ.get(_COMPILATION_CACHE_ENV)
    if folder is None:  # the controller, or a run without workers: a fresh folder for this run
        folder = tempfile.mkdtemp(prefix="deltajax-test-compilation-cache-")
        os.environ[_COMPILATION_CACHE_ENV] = folder
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_configure(config):
    global _times_file
    _share_compilation_cache(config)
    if not hasattr(config, "workerinput"):  # the controller, which sees every worker's reports
        _times_file = os.environ.get("DELTAJAX_TEST_TIMES")
    config.addinivalue_line("markers", "gpu: needs a GPU and the CUDA module")
    config.addinivalue_line("markers", "sanitize: small CUDA cases run under compute-sanitizer")


@pytest.fixture(params=["native", "reference"])
def path(request):
    """Runs the test once with the native kernels of this platform and once with the pure-JAX reference.

    The choice is made when a function is traced: jit caches are cleared on entry and exit so neither run
    reuses the other's traces. Without native kernels for the default backend the native run skips.
    """
    native = request.param == "native"
    if native and _native.default_platform() not in _native.native_platforms():
        pytest.skip(f"no native kernels for {_native.default_platform()}: {_native.describe()}")
    jax.clear_caches()
    with backend.use_reference(not native):
        yield request.param
    jax.clear_caches()


# Modules whose tests take 10-90 s each (on an H100), those with the longest tests first: they start first, so
# that with pytest-xdist (scripts/gpu_check.sh runs 15 workers, one test handed out at a time) the run does not end
# on one worker still busy with a long test picked up last.
_LONG_MODULES = (
    "test_benchmarks",
    "test_examples",
    "test_soak",
    "test_crossover",
    "test_conv_rules",
    "test_fused",
    "test_tune",
    "test_demo",
    "test_pose",
    "test_superres",
    "test_sharding",
    "test_frame_modes",
)


def _start_order(item) -> int:
    module = item.module.__name__.rpartition(".")[2]
    return _LONG_MODULES.index(module) if module in _LONG_MODULES else len(_LONG_MODULES)


def pytest_collection_modifyitems(config, items):
    """Long modules first; GPU tests skip without a GPU, unless DELTAJAX_REQUIRE_GPU=1 turns that into a failure."""
    items.sort(key=_start_order)
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    if has_gpu:
        return
    if os.environ.get("DELTAJAX_REQUIRE_GPU") == "1":
        raise pytest.UsageError("DELTAJAX_REQUIRE_GPU=1 but JAX sees no GPU: " + str(jax.devices()))
    skip = pytest.mark.skip(reason="no GPU (set DELTAJAX_REQUIRE_GPU=1 to make this a failure)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
