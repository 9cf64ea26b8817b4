"""The wheel builds, installs into a fresh virtualenv and imports there, with and without nvcc on PATH.

Slow (two fresh CMake builds): selected with ``-m wheel`` (.ci/run does). The build uses the running
interpreter's build tools (``--no-build-isolation``) and a build directory of its own; the fresh
virtualenv gets the wheel with ``--no-deps`` and sees the running environment's dependencies (jax, numpy,
...) through a .pth file, which does not bring along an editable install of deltajax.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel
ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import os, sys
import jax, jax.numpy as jnp, numpy as np
import deltajax
from deltajax import _native, backend, ops
assert os.path.realpath(deltajax.__file__).startswith(os.path.realpath(sys.prefix)), deltajax.__file__
print(_native.describe())
assert "cpu" in _native.native_platforms()
want_cuda = sys.argv[1] == "1"
try:
    import deltajax._cuda  # static cudart: imports without a GPU or a driver
    has_cuda = True
except ImportError:
    has_cuda = False
assert has_cuda == want_cuda, (has_cuda, want_cuda)
x = ops.Delta(jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 7, 8)), jnp.float32),
              jnp.asarray(np.random.default_rng(1).random((1, 6, 7)) < 0.3))
k = jnp.ones((3, 3, 8, 16)) / 9
assert "deltajax_conv" in jax.jit(lambda x: ops.conv(x, k)).lower(x).as_text()
got = jax.jit(lambda x: ops.conv(x, k))(x)
with backend.use_reference():
    want = jax.jit(lambda x: ops.conv(x, k))(x)
m = np.asarray(want.mask)[..., None]
assert np.allclose(np.where(m, got.values, 0), np.where(m, want.values, 0), atol=1e-5)
print("wheel ok")
"""


def _path_without_nvcc() -> str:
    return os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "nvcc").exists())


@pytest.mark.parametrize("with_nvcc", [False, True], ids=["no_nvcc", "nvcc"])
def test_wheel_builds_and_imports_in_a_fresh_virtualenv(tmp_path, with_nvcc):
    if with_nvcc and shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "DELTAJAX_CUDA", "PYTHONPATH")}
    if not with_nvcc:
        env["PATH"] = _path_without_nvcc()
    build = [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(tmp_path)]
    build += [f"-Cbuild-dir={tmp_path / 'build'}", "-Ccmake.define.DELTAJAX_CUDA_ARCHITECTURES=90", str(ROOT)]
    run = subprocess.run(build, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    (wheel,) = tmp_path.glob("deltajax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("deltajax/_cpu") and n.endswith(".so") for n in names), names
    assert any(n.startswith("deltajax/_cuda") for n in names) == with_nvcc, names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)]
    run = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    run = subprocess.run(
        [python, "-c", CHECK, "1" if with_nvcc else "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "wheel ok" in run.stdout, run.stdout[-2000:] + run.stderr[-3000:]
