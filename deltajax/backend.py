"""Choosing between the native kernels and the pure-JAX reference.

Every op goes through :func:`dispatch`, which selects per platform with
``jax.lax.platform_dependent`` (never a Python ``if`` on the backend): the
native FFI kernel where one is registered for the op, the reference
elsewhere. :func:`use_reference` forces the reference, e.g. to test the
kernels against it; it acts when a function is traced, so jitted functions
traced earlier keep their choice.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator

import jax

from deltajax import _native

_force_reference = os.environ.get("DELTAJAX_BACKEND", "auto") == "reference"


@contextlib.contextmanager
def use_reference(enabled: bool = True) -> Iterator[None]:
    """Within the block, trace every op with the pure-JAX reference (or not, with False)."""
    global _force_reference
    previous, _force_reference = _force_reference, enabled
    try:
        yield
    finally:
        _force_reference = previous


def reference_forced() -> bool:
    """True when ops are traced with the pure-JAX reference only."""
    return _force_reference


def dispatch(
    target: str, reference: Callable, native: Callable, *args, native_ok: bool = True, by_platform: bool = False
):
    """Runs ``native(*args)`` on platforms whose module registered ``target``, else ``reference(*args)``.

    Both must return the same pytree structure, shapes and dtypes. ``native_ok=False`` runs the reference
    everywhere: for a call the kernel cannot take, such as a traced threshold (the kernels take numbers).
    ``by_platform=True`` calls ``native(*args, platform=name)``, for a target whose buffers differ by backend.
    """
    native_ok = native_ok and not _force_reference
    platforms = [p for p in _native.native_platforms() if target in _native.targets(p)] if native_ok else []
    if not platforms:
        return reference(*args)
    branches = {p: functools.partial(native, platform=p) if by_platform else native for p in platforms}
    return jax.lax.platform_dependent(*args, default=reference, **branches)
