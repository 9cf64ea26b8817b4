"""Loads the native extension modules and registers their XLA FFI targets.

``deltajax._cpu`` (C++ kernels) is registered for platform "cpu" and
``deltajax._cuda`` (CUDA kernels), when it was built, for platform "CUDA".
Either may be missing: deltajax then runs the pure-JAX reference there.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings

import jax
import jaxlib.version

# The CPU kernels' OpenMP threads sleep between calls rather than spin (unless the user chose otherwise): a
# delta network makes dozens of short kernel calls per frame with XLA's own thread pool working in between, and
# threads spinning after each call take its cores. libgomp reads this when it loads, with deltajax._cpu below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# platform name in jax.ffi.register_ffi_target -> (module, platform name in lax.platform_dependent)
_BACKENDS = {"cpu": ("deltajax._cpu", "cpu"), "CUDA": ("deltajax._cuda", "cuda")}


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:4])


def check_compatible(built_with: str, running: str, module: str) -> None:
    """Raises ImportError when the running jaxlib is older than the one the module was built against.

    A handler built against newer FFI headers is rejected by an older XLA,
    and on CPU that rejection breaks every later JAX computation; so the
    module is not registered at all.
    """
    if _version_tuple(running) < _version_tuple(built_with):
        raise ImportError(
            f"{module} was built against jaxlib {built_with} but jaxlib {running} is running; an older XLA "
            "rejects handlers built against newer FFI headers. Rebuild deltajax against this jaxlib "
            "(pip install --no-build-isolation --force-reinstall --no-deps .) or upgrade jaxlib. "
            "deltajax falls back to its pure-JAX path meanwhile."
        )


def _load(platform: str):
    module_name, _ = _BACKENDS[platform]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None, f"{module_name} is not built"
    try:
        check_compatible(module.built_with_jaxlib, jaxlib.version.__version__, module_name)
    except ImportError as err:
        warnings.warn(str(err), RuntimeWarning, stacklevel=3)
        return None, str(err)
    for name, capsule in module.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform=platform)
    return module, None


_LOADED: dict[str, object] = {}
_WHY_MISSING: dict[str, str] = {}
for _platform in _BACKENDS:
    _module, _why = _load(_platform)
    if _module is not None:
        _LOADED[_BACKENDS[_platform][1]] = _module
    else:
        _WHY_MISSING[_BACKENDS[_platform][1]] = _why


def native_platforms() -> tuple[str, ...]:
    """lax.platform_dependent names ('cpu', 'cuda') that have native kernels registered."""
    return tuple(_LOADED)


def platform_of(device) -> str:
    """The lax.platform_dependent name ('cpu', 'cuda', 'rocm', 'tpu') of the platform a JAX ``device`` is on."""
    if device.platform == "gpu":
        return "cuda" if "cuda" in device.client.platform_version.lower() else "rocm"
    return device.platform


def default_platform() -> str:
    """The lax.platform_dependent name of JAX's default backend ('cpu', 'cuda', ...)."""
    return platform_of(jax.devices()[0])


def targets(platform: str) -> frozenset[str]:
    """FFI target names the native module of ``platform`` ('cpu' or 'cuda') registered."""
    module = _LOADED.get(platform)
    return frozenset(module.registrations()) if module is not None else frozenset()


def why_missing(platform: str) -> str:
    """Why ``platform`` ('cpu' or 'cuda') has no native module loaded ('' when it has one)."""
    return _WHY_MISSING.get(platform, "")


def describe() -> str:
    """One line per backend: built and registered, or why not."""
    lines = []
    for _, (module, platform) in _BACKENDS.items():
        if platform in _LOADED:
            lines.append(f"{platform}: {module} ({len(targets(platform))} targets)")
        else:
            lines.append(f"{platform}: pure-JAX reference ({_WHY_MISSING[platform]})")
    return "\n".join(lines)
