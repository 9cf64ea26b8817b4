"""Loading the extension: deltajax without it, and the jaxlib version check that keeps JAX usable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deltajax import _native


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_deltajax_works_without_the_extension():
    code = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name in ("deltajax._cpu", "deltajax._cuda"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
import jax.numpy as jnp
import deltajax
from deltajax import _native, ops
assert _native.native_platforms() == (), _native.native_platforms()
assert "deltajax._cpu is not built" in _native.describe(), _native.describe()
x = ops.Delta(jnp.ones((1, 5, 5, 2)), jnp.zeros((1, 5, 5), bool).at[0, 2, 2].set(True))
out = ops.conv(x, jnp.ones((3, 3, 2, 4)))
assert int(out.mask.sum()) == 9 and float(out.values[0, 2, 2, 0]) == 2.0
_, s = ops.activation_init(jnp.zeros((1, 5, 5, 2)))
d, s = ops.activation(s, x, "relu")
print("ok")
"""
    run = run_python(code)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]


def test_check_compatible():
    _native.check_compatible("0.10.2", "0.10.2", "deltajax._cpu")
    _native.check_compatible("0.10.2", "0.11.2", "deltajax._cpu")  # older headers on a newer runtime work
    with pytest.raises(
        ImportError, match=r"deltajax._cpu was built against jaxlib 0.12.0 but jaxlib 0.10.2 is running"
    ):
        _native.check_compatible("0.12.0", "0.10.2", "deltajax._cpu")
    with pytest.raises(ImportError, match=r"Rebuild deltajax against this jaxlib"):
        _native.check_compatible("0.10.10", "0.10.9", "deltajax._cuda")


def test_module_built_against_a_newer_jaxlib_is_refused_and_jax_stays_usable():
    code = """
import sys, types, warnings
fake = types.ModuleType("deltajax._cpu")
fake.built_with_jaxlib = "99.0.0"
def registrations():
    raise AssertionError("a refused module must not register its handlers")
fake.registrations = registrations
sys.modules["deltajax._cpu"] = fake
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from deltajax import _native, ops
messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert any("built against jaxlib 99.0.0" in m and "Rebuild deltajax" in m for m in messages), messages
assert "cpu" not in _native.native_platforms()
import jax, jax.numpy as jnp
assert float(jax.jit(lambda a: (a * 2).sum())(jnp.ones(4))) == 8.0  # JAX's CPU backend still works
x = ops.Delta(jnp.ones((1, 4, 4, 1)), jnp.ones((1, 4, 4), bool))
assert float(ops.conv(x, jnp.ones((1, 1, 1, 1))).values.sum()) == 16.0  # through the reference
print("ok")
"""
    run = run_python(code)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]
