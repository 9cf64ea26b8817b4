"""Which backend each platform runs (native kernels or the pure-JAX reference), said by every entry point.

The pure-JAX reference is exact but slow: a benchmark that runs it without a
word reports numbers that are not deltajax's. So every command-line entry
point (``deltajax demo | tune | benchmark``, the ``benchmarks.*`` modules)
adds ``--require-native`` / ``--allow-reference`` with :func:`add_arguments`
and calls :func:`check` after parsing: it prints one line per platform, warns
loudly (with the fix) where a native module is expected but missing, and with
``--require-native`` (the benchmarks' default) stops with that message instead.

A native module is expected for the CPU always, and for CUDA when a CUDA GPU
is present. A common way to lose it: running from a clone's root after a
regular ``pip install .`` imports the source tree's ``deltajax/`` (the current
folder comes first on ``sys.path``), which has no compiled extension.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import pathlib
import sys

from deltajax import _native, backend

_EXTENSIONS = {"cpu": "_cpu", "cuda": "_cuda"}


def platforms_in_use() -> tuple[str, ...]:
    """``lax.platform_dependent`` names of the platforms this process runs on: 'cpu', plus the default if other."""
    default = _native.default_platform()
    return ("cpu",) if default == "cpu" else ("cpu", default)


def backend_lines() -> list[str]:
    """One line per platform in use: 'native kernels (module, targets)' or 'pure-JAX reference (why)'."""
    lines = []
    for platform in platforms_in_use():
        if backend.reference_forced():
            lines.append(f"{platform}: pure-JAX reference (forced by DELTAJAX_BACKEND=reference)")
        elif platform in _native.native_platforms():
            count = len(_native.targets(platform))
            lines.append(f"{platform}: native kernels (deltajax.{_EXTENSIONS[platform]}, {count} targets)")
        elif platform in _EXTENSIONS:
            lines.append(f"{platform}: pure-JAX reference ({_native.why_missing(platform)})")
        else:
            lines.append(f"{platform}: pure-JAX reference (deltajax has no kernels for this platform)")
    return lines


def shadowed_install(package_dir: pathlib.Path, search_path: list[str]) -> pathlib.Path | None:
    """The installed deltajax a source tree hides, when ``package_dir`` is a clone's ``deltajax/`` without its
    compiled CPU module and another entry of ``search_path`` holds a deltajax that has one; else None."""
    root = package_dir.resolve().parent
    if not (root / "pyproject.toml").exists() or any(package_dir.glob("_cpu*")):
        return None
    others = [p for p in search_path if pathlib.Path(p or os.curdir).resolve() != root]
    spec = importlib.machinery.PathFinder.find_spec("deltajax", others)
    if spec is None or not spec.submodule_search_locations:
        return None
    installed = pathlib.Path(next(iter(spec.submodule_search_locations)))
    return installed if any(installed.glob("_cpu*")) else None


def module_present(name: str) -> bool:
    """True when ``name`` can be found on the import path (whether or not it loaded)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _cpu_fix() -> str:
    package_dir = pathlib.Path(__file__).parent
    installed = shadowed_install(package_dir, sys.path)
    if installed is not None:
        return (
            f"deltajax was imported from the source tree {package_dir}, which has no compiled extension; it hides "
            f"the installed deltajax at {installed}, which has one. Run the command from another folder (the "
            "installed `deltajax` command, e.g. `cd ~ && deltajax benchmark`), or build in place: `pip install -e .`"
        )
    if (package_dir.parent / "pyproject.toml").exists():
        return (
            f"deltajax was imported from the source tree {package_dir}, which has no compiled extension: build it "
            "in place with `pip install -e .` (needs CMake and a C++ compiler), or run from another folder"
        )
    return (
        "reinstall deltajax with its C++ extension: `pip install --force-reinstall --no-deps .` from a clone, with "
        "CMake and a C++ compiler on PATH (and DELTAJAX_NATIVE not OFF)"
    )


def problems() -> list[str]:
    """Why a platform in use runs the pure-JAX reference where native kernels were expected, each with its fix."""
    if backend.reference_forced():
        return ["DELTAJAX_BACKEND=reference forces the pure-JAX reference everywhere: unset it"]
    found = []
    native = _native.native_platforms()
    if "cpu" not in native:  # a module that is there but was refused (built for a newer jaxlib) says its own fix
        fix = "" if module_present("deltajax._cpu") else f"; {_cpu_fix()}"
        found.append(f"cpu: {_native.why_missing('cpu')}{fix}")
    if "cuda" in platforms_in_use() and "cuda" not in native:
        found.append(
            f"cuda: a CUDA GPU is present but {_native.why_missing('cuda')}; rebuild with nvcc on PATH: "
            "`DELTAJAX_CUDA=ON pip install --force-reinstall --no-deps .` (or `pip install -e .` in a clone)"
        )
    return found


def add_arguments(parser: argparse.ArgumentParser, *, require_by_default: bool) -> None:
    """Adds ``--require-native`` and ``--allow-reference`` (dest ``require_native``) to ``parser``."""
    group = parser.add_mutually_exclusive_group()
    default = " (the default)" if require_by_default else ""
    group.add_argument(
        "--require-native",
        dest="require_native",
        action="store_true",
        default=require_by_default,
        help=f"stop with an error when a native module is missing where it is expected{default}",
    )
    group.add_argument(
        "--allow-reference",
        dest="require_native",
        action="store_false",
        help="run the pure-JAX reference where native kernels are missing (with a warning)"
        + ("" if require_by_default else " (the default)"),
    )


def check(prog: str, require_native: bool) -> None:
    """Prints the backend of each platform to stderr; warns loudly, or with ``require_native`` raises
    ``SystemExit`` with the fix, when a native module is missing where it is expected."""
    print(f"{prog}: backends: " + "; ".join(backend_lines()), file=sys.stderr, flush=True)
    found = problems()
    if not found:
        return
    listed = "\n".join(f"  - {p}" for p in found)
    if require_native:
        raise SystemExit(
            f"{prog}: error: native kernels are missing where they are expected (--require-native):\n{listed}\n"
            "Pass --allow-reference to run the pure-JAX reference anyway (exact, but its timings are not deltajax's)."
        )
    bar = "!" * 100
    print(
        f"{bar}\n{prog}: WARNING: running the pure-JAX reference where native kernels are expected; timings are NOT "
        f"those of deltajax's kernels (--require-native makes this an error):\n{listed}\n{bar}",
        file=sys.stderr,
        flush=True,
    )
