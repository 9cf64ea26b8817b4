"""The CUDA package (packages/cuda13) and the deltajax package pin each other's version; the wheel build
script rejects a bad argument with a message naming it."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _project(path: Path) -> dict:
    return tomllib.loads(path.read_text())["project"]


def test_cuda_package_and_deltajax_pin_the_same_version():
    deltajax = _project(ROOT / "pyproject.toml")
    cuda = _project(ROOT / "packages" / "cuda13" / "pyproject.toml")
    assert cuda["version"] == deltajax["version"]
    assert f"deltajax=={deltajax['version']}" in cuda["dependencies"]
    assert f"{cuda['name']}=={cuda['version']}" in deltajax["optional-dependencies"]["cuda13"]


def test_build_wheels_rejects_an_unknown_part(tmp_path):
    run = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_wheels.sh"), str(tmp_path), "gpu"], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "parts must be all, cpu or cuda, got 'gpu'" in run.stderr
    assert not any(tmp_path.iterdir())
