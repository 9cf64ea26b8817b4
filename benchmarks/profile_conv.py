"""One delta convolution per configuration, for ncu: python -m benchmarks.profile_conv [dtype precision k p ...]."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks.conv_cuda import cell_mask
from deltajax import native_check, ops


def run(dtype, precision, k, p, n=1, h=1080, w=1920, c=64):
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (n, h, w, c), jnp.float32).astype(dtype)
    wt = jax.random.normal(key, (k, k, c, c), jnp.float32).astype(dtype) * 0.05
    m = cell_mask(key, n, h, w, p)
    prec = lax.Precision.HIGHEST if precision == "highest" else None
    f = jax.jit(lambda x, m, wt: ops.conv(ops.Delta(x, m), wt, precision=prec))
    jax.block_until_ready(f(x, m, wt))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_conv", description=__doc__)
    p.add_argument("configs", nargs="*", default=["bfloat16", "default", "3", "1.0"], help="dtype precision k p ...")
    native_check.add_arguments(p, require_by_default=True)
    args = p.parse_args(argv)
    native_check.check(p.prog, args.require_native)
    for i in range(0, len(args.configs), 4):
        d, pr, k, frac = args.configs[i : i + 4]
        run(jnp.dtype(d), pr, int(k), float(frac))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
