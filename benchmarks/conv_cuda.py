"""Delta convolution (CUDA kernels) against dense XLA, per precision class, at several update fractions.

Usage: python -m benchmarks.conv_cuda [--quick] [--out FILE.json]

Timing: a jitted chain of R calls, each call's input made to depend on the previous call's output through a
one-element dynamic_update_slice (so XLA can neither hoist nor merge the calls and every output is dead right
away), timed with block_until_ready, median of several repeats, divided by R. The same chain with the
convolution taken out is timed too and subtracted ("net" columns): it is the fixed cost of the chain itself.

Masks: the frame is cut into 32 x 32 cells and each cell is active with probability p (spatially coherent
changes, as in video); "rand" masks draw single pixels (the worst case for receptive-field growth).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deltajax import native_check, ops

R = 20
HIGHEST = lax.Precision.HIGHEST
MODES = {  # name: (dtype, precision)
    "f32_highest": (jnp.float32, HIGHEST),
    "f32_tf32": (jnp.float32, lax.Precision.DEFAULT),
    "bf16": (jnp.bfloat16, lax.Precision.DEFAULT),
}


def _time(fn, *args, repeats=7):
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / R * 1e3  # ms per call


def _chain(step):
    """R dependent calls of step(v) -> scalar-able array; v gets one element of the previous output."""

    @jax.jit
    def run(v, *rest):
        v = v + jnp.zeros((), v.dtype)  # a private copy that the dynamic_update_slice may overwrite in place
        acc = jnp.zeros((), jnp.float32)
        for _ in range(R):
            y = step(v, *rest)
            e = y.reshape(-1)[:1].astype(v.dtype).reshape((1, 1, 1, 1))
            v = lax.dynamic_update_slice(v, e, (0, 0, 0, 0))
            acc = acc + e.reshape(()).astype(jnp.float32)
        return acc

    return run


def cell_mask(key, n, h, w, p, cell=32):
    if p >= 1.0:
        return jnp.ones((n, h, w), bool)
    cells = jax.random.uniform(key, (n, -(-h // cell), -(-w // cell))) < p
    return jnp.repeat(jnp.repeat(cells, cell, 1), cell, 2)[:, :h, :w]


def rand_mask(key, n, h, w, p):
    return jax.random.uniform(key, (n, h, w)) < p


def bench_case(n, h, w, cin, cout, k, modes, fractions, rand_fractions=(), dense=True, groups=1):
    key = jax.random.PRNGKey(0)
    kv, kk, km = jax.random.split(key, 3)
    pad = "SAME"
    rows = []
    overhead = {}
    for mode in modes:
        dtype, precision = MODES[mode]
        x = jax.random.normal(kv, (n, h, w, cin), jnp.float32).astype(dtype)
        wt = (jax.random.normal(kk, (k, k, cin // groups, cout), jnp.float32) / np.sqrt(k * k * cin / groups)).astype(
            dtype
        )
        if dtype not in overhead:
            overhead[dtype] = _time(_chain(lambda v: v), x)

        def dense_conv(v, wt, precision=precision):
            return lax.conv_general_dilated(
                v,
                wt,
                (1, 1),
                pad,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=groups,
                precision=precision,
            )

        def delta(v, m, wt, precision=precision):
            return ops.conv(ops.Delta(v, m), wt, padding=pad, groups=groups, precision=precision).mask

        t_dense = _time(_chain(dense_conv), x, wt) if dense else float("nan")
        delta_fn = _chain(delta)
        masks = [("cell", p, cell_mask(km, n, h, w, p)) for p in fractions]
        masks += [("rand", p, rand_mask(km, n, h, w, p)) for p in rand_fractions]
        for kind, p, m in masks:
            t = _time(delta_fn, x, m, wt)
            ov = overhead[dtype]
            out_mask = ops.conv(ops.Delta(x, m), wt, padding=pad, groups=groups, precision=precision).mask
            out_frac = float(jnp.mean(out_mask))
            rows.append(
                dict(
                    shape=f"{n}x{h}x{w}",
                    cin=cin,
                    cout=cout,
                    k=k,
                    groups=groups,
                    mode=mode,
                    mask=kind,
                    p=p,
                    p_out=round(out_frac, 4),
                    dense_ms=round(t_dense, 4),
                    delta_ms=round(t, 4),
                    dense_net_ms=round(t_dense - ov, 4),
                    delta_net_ms=round(t - ov, 4),
                    speedup_net=round((t_dense - ov) / max(t - ov, 1e-6), 2),
                )
            )
            r = rows[-1]
            print(
                f"{r['shape']:>12} {cin:>4}->{cout:<4} {k}x{k} g{groups:<3} {mode:>11} {kind:>4} p={p:<5} "
                f"out={r['p_out']:<6} "
                f"dense {r['dense_ms']:8.4f} delta {r['delta_ms']:8.4f} ms  net {r['dense_net_ms']:8.4f} "
                f"{r['delta_net_ms']:8.4f}  x{r['speedup_net']}",
                flush=True,
            )
    return rows, overhead


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--sweep", action="store_true", help="tile-configuration sweep: few cases, no dense timings")
    native_check.add_arguments(ap, require_by_default=True)
    args = ap.parse_args()
    native_check.check("python -m benchmarks.conv_cuda", args.require_native)
    print(jax.devices(), flush=True)
    bench_case(1, 64, 64, 64, 64, 3, ["bf16"], [0.5], dense=False)  # warm-up: first-call costs stay out
    all_rows = []
    fr = [0.0, 0.01, 0.05, 0.25, 1.0]
    if args.sweep:
        cases = [
            ((1, 1080, 1920, 64, 64, 3), list(MODES), [0.0, 0.05, 1.0], []),
            ((1, 1080, 1920, 64, 64, 1), ["bf16"], [0.05, 1.0], []),
            ((1, 1080, 1920, 256, 256, 3), ["bf16"], [0.05], []),
        ]
        for case, modes, fracs, rfracs in cases:
            all_rows += bench_case(*case, modes, fracs, rfracs, dense=False)[0]
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"device": str(jax.devices()[0]), "rows": all_rows}, f, indent=1)
        return
    cases = [
        ((1, 1080, 1920, 64, 64, 3), list(MODES), fr, [0.05]),
        ((1, 1080, 1920, 64, 64, 1), list(MODES), fr, []),
        ((1, 1080, 1920, 64, 64, 3), ["f32_highest", "bf16"], [0.0, 0.05, 1.0], [], 64),  # depthwise
    ]
    if not args.quick:
        cases += [
            ((8, 432, 768, 64, 64, 3), list(MODES), [0.0, 0.05, 1.0], []),
            ((1, 1080, 1920, 32, 32, 3), ["bf16", "f32_tf32"], [0.05, 1.0], []),
            ((1, 1080, 1920, 128, 128, 3), ["bf16", "f32_tf32"], [0.05, 1.0], []),
            ((1, 1080, 1920, 256, 256, 1), ["bf16", "f32_tf32"], [0.05, 1.0], []),
            ((8, 432, 768, 256, 256, 3), ["bf16"], [0.05, 1.0], []),
        ]
    overheads = {}
    for case, modes, fracs, rfracs, *groups in cases:
        rows, ov = bench_case(*case, modes, fracs, rfracs, groups=groups[0] if groups else 1)
        all_rows += rows
        overheads.update({str(k): v for k, v in ov.items()})
    print("chain overhead per call (ms):", overheads)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": str(jax.devices()[0]), "rows": all_rows, "overhead_ms": overheads}, f, indent=1)


if __name__ == "__main__":
    main()
