"""Entry points say which backend each platform runs, and warn or stop where native kernels are missing."""

from __future__ import annotations

import argparse
import pathlib

import pytest

from deltajax import _native, native_check


def _package(folder: pathlib.Path, *, compiled: bool) -> pathlib.Path:
    package = folder / "deltajax"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if compiled:
        (package / "_cpu.cpython-311-x86_64-linux-gnu.so").write_text("")
    return package


def test_a_source_tree_hiding_an_installed_package_is_found(tmp_path):
    (tmp_path / "clone" / "pyproject.toml").parent.mkdir()
    (tmp_path / "clone" / "pyproject.toml").write_text("")
    source = _package(tmp_path / "clone", compiled=False)
    installed = _package(tmp_path / "site", compiled=True)
    path = [str(tmp_path / "clone"), str(tmp_path / "site")]
    assert native_check.shadowed_install(source, path) == installed
    assert native_check.shadowed_install(source, path[:1]) is None  # nothing installed elsewhere
    (installed / "_cpu.cpython-311-x86_64-linux-gnu.so").unlink()
    assert native_check.shadowed_install(source, path) is None  # the installed one has no kernels either


def test_a_built_tree_or_an_installed_package_is_not_shadowing(tmp_path):
    installed = _package(tmp_path / "site", compiled=True)
    assert native_check.shadowed_install(installed, [str(tmp_path / "site")]) is None  # no pyproject.toml
    (tmp_path / "clone").mkdir()
    (tmp_path / "clone" / "pyproject.toml").write_text("")
    built = _package(tmp_path / "clone", compiled=True)
    assert native_check.shadowed_install(built, [str(tmp_path / "clone"), str(tmp_path / "site")]) is None


@pytest.fixture
def no_native(monkeypatch):
    """As if neither native module had loaded."""
    monkeypatch.setattr(_native, "_LOADED", {})
    monkeypatch.setattr(_native, "_WHY_MISSING", {"cpu": "deltajax._cpu is not built", "cuda": "not built"})
    monkeypatch.setattr(native_check, "module_present", lambda name: False)


def test_missing_cpu_module_is_reported_with_a_fix(no_native):
    assert native_check.backend_lines()[0] == "cpu: pure-JAX reference (deltajax._cpu is not built)"
    (problem,) = native_check.problems()
    assert problem.startswith("cpu: deltajax._cpu is not built; ") and "pip install" in problem


def test_a_refused_module_gives_its_own_fix(no_native, monkeypatch):
    monkeypatch.setattr(native_check, "module_present", lambda name: True)
    monkeypatch.setattr(_native, "_WHY_MISSING", {"cpu": "deltajax._cpu was built against jaxlib 9 ... Rebuild"})
    assert native_check.problems() == ["cpu: deltajax._cpu was built against jaxlib 9 ... Rebuild"]


def test_a_gpu_without_the_cuda_module_is_reported(monkeypatch):
    monkeypatch.setattr(native_check, "platforms_in_use", lambda: ("cpu", "cuda"))
    monkeypatch.setattr(_native, "_LOADED", {k: v for k, v in _native._LOADED.items() if k == "cpu"})
    monkeypatch.setattr(_native, "_WHY_MISSING", {"cuda": "deltajax._cuda is not built"})
    problems = native_check.problems()
    assert any(p.startswith("cuda: a CUDA GPU is present but deltajax._cuda is not built") for p in problems)
    assert any("DELTAJAX_CUDA=ON" in p for p in problems)


def test_require_native_stops_and_the_default_warns(no_native, capsys):
    with pytest.raises(
        SystemExit, match=r"(?s)prog: error: native kernels are missing.*\n  - cpu: .*--allow-reference"
    ):
        native_check.check("prog", require_native=True)
    native_check.check("prog", require_native=False)
    err = capsys.readouterr().err
    assert "prog: backends: cpu: pure-JAX reference" in err and "WARNING" in err and "timings are NOT" in err


def test_native_kernels_are_announced_without_a_warning(capsys):
    if "cpu" not in _native.native_platforms():
        pytest.skip("the CPU module is not built here")
    native_check.check("prog", require_native=True)
    err = capsys.readouterr().err
    assert "cpu: native kernels (deltajax._cpu, " in err and "WARNING" not in err


@pytest.mark.parametrize("default", [True, False])
def test_flags(default):
    p = argparse.ArgumentParser()
    native_check.add_arguments(p, require_by_default=default)
    assert p.parse_args([]).require_native is default
    assert p.parse_args(["--require-native"]).require_native is True
    assert p.parse_args(["--allow-reference"]).require_native is False
    with pytest.raises(SystemExit):
        p.parse_args(["--require-native", "--allow-reference"])


def _entry_points():
    from benchmarks import crossover, kernels, profile_conv, profile_step
    from deltajax import benchmark, demo, tune_cli

    return {
        "deltajax benchmark": (benchmark.main, []),
        "benchmarks.kernels": (kernels.main, ["--quick"]),
        "benchmarks.crossover": (crossover.main, []),
        "benchmarks.profile_step": (profile_step.main, []),
        "benchmarks.profile_conv": (profile_conv.main, []),
        "deltajax demo": (demo.main, ["--require-native"]),
        "deltajax tune": (tune_cli.main, ["--require-native"]),
    }


@pytest.mark.parametrize("name", sorted(_entry_points()))
def test_entry_points_refuse_to_run_the_reference_silently(name, no_native):
    main, argv = _entry_points()[name]
    with pytest.raises(SystemExit, match="native kernels are missing"):
        main(argv)
