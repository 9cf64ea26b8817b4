"""One delta convolution per configuration, for ncu: python -m benchmarks.profile_conv [dtype precision k p ...]."""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.conv_cuda import cell_mask
from deltajax import ops


def run(dtype, precision, k, p, n=1, h=1080, w=1920, c=64):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (n, h, w, c), jnp.float32).astype(dtype)
    wt = jax.random.normal(key, (k, k, c, c), jnp.float32).astype(dtype) * 0.05
    m = cell_mask(key, n, h, w, p)
    prec = lax.Precision.HIGHEST if precision == "highest" else None
    f = jax.jit(lambda x, m, wt: ops.conv(ops.Delta(x, m), wt, precision=prec))
    jax.block_until_ready(f(x, m, wt))


if __name__ == "__main__":
    args = sys.argv[1:] or ["bfloat16", "default", "3", "1.0"]
    for i in range(0, len(args), 4):
        d, pr, k, p = args[i : i + 4]
        run(jnp.dtype(d), pr, int(k), float(p))
