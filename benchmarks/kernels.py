"""Single-layer benchmark: the delta kernel against dense XLA on the same input, same run, same device.

For each layer (3x3 conv, 1x1 conv, 3x3 and 5x5 depthwise; relu6 after a
batch-norm scale, the activation rule with its state; a conv followed by
batch norm and relu6 as one op, ``ops.conv_activation``), channel count,
frame shape, update fraction p (blob-shaped regions, or scattered pixels with
``--masks scatter``) and precision, it times
  - dense XLA (``lax.conv_general_dilated`` on the whole frame),
  - the delta op (``deltajax.ops.conv`` on a Delta whose mask covers p),
  - on GPU presets also the obvious pure-JAX sparse version (fixed-size
    ``jnp.nonzero``, gathered neighbourhoods, one matmul, scatter),
and reports time, speedup against dense in the same precision and against
the fastest dense mode, achieved TFLOP/s on the active work, and 1/p. With
``--trace DIR`` it also records the delta op's calls with the JAX profiler
(``TRACE_CALLS`` calls in one program, as timed) and adds to each row the
kernels of one call: their count, their summed time and their order. For
the activation, dense is XLA's fused ``relu6(x * scale + offset)`` on the
whole frame, the pure-JAX column is deltajax's own reference of the rule
(XLA's fusion of it), and GB/s is counted on the active values (x, state
read; output, state written). For conv + relu6, dense is XLA's convolution
with the batch norm and relu6 fused after it, and TFLOP/s counts the conv's
active outputs.

Usage: python -m benchmarks.kernels --preset cpu|gpu [--out FILE.json] [--quick] [--trace DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks.profile_step import traced_kernels
from deltajax import native_check, ops
from deltajax._cli import fraction_list
from deltajax.backend import use_reference
from deltajax.timing import MASKS, median_time, repeated, stepped_program, stepped_time

DIMS = ("NHWC", "HWIO", "NHWC")
LAYERS = {  # name: (kernel size, depthwise)
    "conv3x3": (3, False),
    "conv1x1": (1, False),
    "dw3x3": (3, True),
    "dw5x5": (5, True),
}
ACTIVATIONS = ("relu6",)  # element-wise layers: the activation rule, batch-norm scale fused
FUSED = {  # conv -> batch norm -> relu6 as one op (ops.conv_activation): name -> the conv layer
    "conv3x3_relu6": "conv3x3",
    "conv1x1_relu6": "conv1x1",
    "dw3x3_relu6": "dw3x3",
}
PRECISIONS = {  # name: (dtype, lax precision); "f32_default" is TF32 on tensor-core GPUs
    "f32_highest": (jnp.float32, lax.Precision.HIGHEST),
    "f32_default": (jnp.float32, lax.Precision.DEFAULT),
    "bf16": (jnp.bfloat16, lax.Precision.DEFAULT),
}


@dataclasses.dataclass(frozen=True)
class Preset:
    shapes: tuple[tuple[int, int, int], ...]  # (N, H, W)
    channels: tuple[int, ...]
    fractions: tuple[float, ...]
    precisions: tuple[str, ...]
    sparse_baseline: bool
    seconds: float = 0.25  # per timed sample (repetitions in one program are sized to fill it)


PRESETS = {
    "cpu": Preset(((1, 432, 768),), (32, 64, 128), (0.0, 0.01, 0.05, 0.10, 0.25, 1.0), ("f32_highest",), False),
    "gpu": Preset(
        ((1, 1080, 1920), (8, 432, 768)),
        (32, 64, 128, 256),
        (0.0, 0.01, 0.05, 0.10, 0.25, 0.50, 1.0),
        tuple(PRECISIONS),
        True,
    ),
}
# A few minutes: the README's single-layer table; the full "gpu" preset takes much longer.
PRESETS["gpu-check"] = Preset(((1, 1080, 1920),), (64,), (0.0, 0.05, 1.0), tuple(PRECISIONS), True, seconds=0.1)
PRESETS["gpu-mini"] = Preset(((1, 1080, 1920),), (64,), (0.0, 0.05, 1.0), ("f32_default", "bf16"), False)
QUICK = {
    "cpu": Preset(((1, 216, 384),), (32,), (0.0, 0.05, 1.0), ("f32_highest",), False),
    "gpu": Preset(((1, 540, 960),), (64,), (0.0, 0.05, 1.0), tuple(PRECISIONS), True),
}


# Delta calls in one traced program: stepped_time's default steps, so that a stepped row traces the very program
# it timed (stepped_program caches it), with no second compile.
TRACE_CALLS = 16


def traced_calls(program, make_args, trace: str, row: dict) -> dict:
    """One call of ``program(*make_args())`` (``TRACE_CALLS`` delta calls in one program: ``repeated`` or
    ``stepped_program``) traced after a compiling call into a folder under ``trace`` named by ``row``'s case, per
    delta call: ``kernels_per_call``, ``kernel_us_per_call`` (the program's glue included) and ``call_kernels``, a
    call's share of the kernels from the middle call's first on, in order (``{"kernel | hlo_op", "us",
    "gap_us"}``; on a CPU, XLA's thunks, whose order may interleave two calls). The arguments are made before the
    trace, so that only the calls are in it; a donated state is made anew for each call."""
    case = f"{row['layer']}_{row['n']}x{row['h']}x{row['w']}_c{row['c']}_{row['precision']}_p{row['p']:g}"
    jax.block_until_ready(program(*make_args()))
    args = jax.block_until_ready(make_args())
    specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), args)
    table = traced_kernels(
        lambda: jax.block_until_ready(program(*args)),
        os.path.join(trace, case),
        lambda: program.lower(*specs),
        top=0,
        steps=TRACE_CALLS,
    )
    return {
        "kernels_per_call": table["kernels"] / TRACE_CALLS,
        "kernel_us_per_call": table["kernel_ms"] * 1e3 / TRACE_CALLS,
        "call_kernels": table["timeline"]["kernels"],
    }


def conv_flops(active_outputs: float, k: int, cin_per_group: int, cout: int) -> float:
    """2 * multiply-adds of a convolution evaluated at ``active_outputs`` pixels."""
    return 2.0 * active_outputs * k * k * cin_per_group * cout


def sparse_jax_conv(values, mask, kernel, *, count: int, groups: int, precision):
    """The obvious pure-JAX sparse conv (stride 1, SAME): nonzero, gather, matmul, scatter."""
    n, h, w, c = values.shape
    k = kernel.shape[0]
    r = k // 2
    out_mask = ops.Delta(values, mask)  # reuse the op's receptive-field rule for the active outputs
    out_mask = ops.conv(out_mask, jnp.zeros((k, k, c // groups, kernel.shape[3]), values.dtype), groups=groups).mask
    b, y, x = jnp.nonzero(out_mask, size=count, fill_value=0)
    padded = jnp.pad(jnp.where(mask[..., None], values, 0), ((0, 0), (r, r), (r, r), (0, 0)))
    offsets = jnp.arange(k)
    patches = padded[
        b[:, None, None], y[:, None, None] + offsets[None, :, None], x[:, None, None] + offsets[None, None]
    ]
    if groups == 1:
        out = jnp.matmul(patches.reshape(count, -1), kernel.reshape(-1, kernel.shape[3]), precision=precision)
    else:  # depthwise
        out = jnp.einsum("pijc,ijc->pc", patches, kernel[:, :, 0, :], precision=precision)
    return jnp.zeros((n, h, w, kernel.shape[3]), values.dtype).at[b, y, x].set(out.astype(values.dtype))


def _row(layer, shape, c, precision, p, p_out, dense_s, delta_s, **extra) -> dict:
    """One benchmark row: the case, both times, the speedup and the ideal 1/p; ``extra`` fields after them."""
    n, h, w = shape
    return {
        "layer": layer,
        "n": n,
        "h": h,
        "w": w,
        "c": c,
        "precision": precision,
        "p": p,
        "p_out": p_out,
        "dense_ms": dense_s * 1e3,
        "delta_ms": delta_s * 1e3,
        "speedup": dense_s / delta_s,
        "ideal": (1 / p) if p > 0 else None,
        **extra,
    }


def run_activation_case(
    layer: str,
    shape,
    c: int,
    precision: str,
    fractions,
    baseline: bool,
    seed: int = 0,
    masks: str = "blob",
    trace: str | None = None,
):
    """The activation rule (``ops.activation`` with a fused scale, state carried) against dense XLA; with
    ``trace``, each row's calls traced into a folder under it (``traced_calls``)."""
    n, h, w = shape
    dtype = PRECISIONS[precision][0]
    rng = np.random.default_rng(seed)
    frame = jnp.asarray(rng.normal(0, 1, (n, h, w, c)), dtype)
    scale, offset = (jnp.asarray(rng.normal(1, 0.2, c), jnp.float32) for _ in range(2))

    def dense(previous, x, scale, offset):  # the output is carried: written in full, as a network layer writes it
        chain = 0 * previous[0, 0, 0, 0].astype(jnp.float32)
        y = x.astype(jnp.float32) * scale.reshape(1, 1, 1, -1) + offset.reshape(1, 1, 1, -1) + chain
        y = getattr(jax.nn, layer)(y).astype(x.dtype)
        return y, y

    def step(state, values, mask, scale):
        return ops.activation(state, ops.Delta(values, mask), layer, scale=scale)

    fresh = jax.jit(lambda x: ops.activation_init(x.astype(jnp.float32) * 0.5, layer)[1])  # a new state each time
    dense_s = stepped_time(dense, jnp.zeros_like(frame), frame, scale, offset, unroll=True)
    rows = []
    for p in fractions:
        mask = jnp.asarray(MASKS[masks](n, h, w, p, seed=seed + 1))
        delta_s = stepped_time(step, fresh(frame), frame, mask, scale, unroll=True)
        active = float(jnp.sum(mask)) * c
        gbps = active * (2 * jnp.dtype(dtype).itemsize + 16) / delta_s / 1e9
        row = _row(
            layer, shape, c, precision, p, float(jnp.mean(mask)), dense_s, delta_s, tflops_active=0.0, gbps_active=gbps
        )
        if baseline and 0 < p < 1:
            with use_reference():
                row["sparse_jax_ms"] = stepped_time(step, fresh(frame), frame, mask, scale, unroll=True) * 1e3
        if trace:
            program = stepped_program(step, TRACE_CALLS, unroll=True)
            row.update(traced_calls(program, lambda mask=mask: (fresh(frame), frame, mask, scale), trace, row))
        rows.append(row)
    return rows


def _conv_operands(layer: str, shape, c: int, precision: str, rng):
    """A conv layer of ``LAYERS`` (``c`` -> ``c`` channels) drawn from ``rng``: ``(k, groups, lax precision, kernel
    [k, k, c / groups, c], frame [N, H, W, c])``."""
    k, depthwise = LAYERS[layer]
    dtype, lax_precision = PRECISIONS[precision]
    groups = c if depthwise else 1
    kernel = jnp.asarray(rng.normal(0, 0.1, (k, k, c // groups, c)), dtype)
    frame = jnp.asarray(rng.normal(0, 1, (*shape, c)), dtype)
    return k, groups, lax_precision, kernel, frame


def _dense_conv(x, kernel, groups: int, precision):
    """Dense XLA's stride-1 SAME convolution of ``x`` (NHWC) with ``kernel`` (HWIO)."""
    return lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=DIMS, feature_group_count=groups, precision=precision
    )


def run_fused_case(
    layer: str,
    shape,
    c: int,
    precision: str,
    fractions,
    seed: int = 0,
    seconds: float = 0.25,
    masks: str = "blob",
    trace: str | None = None,
):
    """A conv, batch norm and relu6 as one op (``ops.conv_activation``, state carried) against dense XLA's conv
    with the batch norm and relu6 fused after it; with ``trace``, each row's calls traced (``traced_calls``)."""
    n, h, w = shape
    rng = np.random.default_rng(seed)
    k, groups, lax_precision, kernel, frame = _conv_operands(FUSED[layer], shape, c, precision, rng)
    scale, offset = (jnp.asarray(rng.normal(1, 0.2, c), jnp.float32) for _ in range(2))

    def normed(x, kernel, scale, offset):  # float32: the batch-normed conv
        y = _dense_conv(x, kernel, groups, lax_precision)
        return y.astype(jnp.float32) * scale.reshape(1, 1, 1, -1) + offset.reshape(1, 1, 1, -1)

    def dense(x, kernel, scale, offset):
        return jax.nn.relu6(normed(x, kernel, scale, offset)).astype(x.dtype)

    def step(state, values, mask):
        y, new, _ = ops.conv_activation(
            state, ops.Delta(values, mask), kernel, "relu6", scale=scale, groups=groups, precision=lax_precision
        )
        return y, new

    # a new state each time: that of the first frame's batch-normed conv (its activation, all of it sent)
    fresh = jax.jit(lambda x: ops.activation_init(normed(x, kernel, scale, offset), "relu6")[1])
    dense_s = median_time(dense, frame, kernel, scale, offset, target_s=seconds)
    rows = []
    for p in fractions:
        mask = jnp.asarray(MASKS[masks](n, h, w, p, seed=seed + 1))
        active_out = float(jnp.sum(ops.conv(ops.Delta(frame, mask), kernel, groups=groups).mask))
        delta_s = stepped_time(step, fresh(frame), frame, mask, unroll=True)
        tflops = conv_flops(active_out, k, c // groups, c) / delta_s / 1e12
        row = _row(layer, shape, c, precision, p, active_out / (n * h * w), dense_s, delta_s, tflops_active=tflops)
        if trace:
            program = stepped_program(step, TRACE_CALLS, unroll=True)
            row.update(traced_calls(program, lambda mask=mask: (fresh(frame), frame, mask), trace, row))
        rows.append(row)
    return rows


def run_case(
    layer: str,
    shape,
    c: int,
    precision: str,
    fractions,
    sparse_baseline: bool,
    seed: int = 0,
    seconds: float = 0.25,
    masks: str = "blob",
    trace: str | None = None,
):
    """The rows of one layer, shape, channel count and precision over ``fractions``, with masks of the shape
    named ``masks`` (deltajax.timing.MASKS); with ``trace``, each row's delta calls traced into a folder under it
    (``traced_calls``)."""
    if layer in ACTIVATIONS:
        return run_activation_case(layer, shape, c, precision, fractions, sparse_baseline, seed, masks, trace)
    if layer in FUSED:
        return run_fused_case(layer, shape, c, precision, fractions, seed, seconds, masks, trace)
    n, h, w = shape
    k, groups, lax_precision, kernel, frame = _conv_operands(layer, shape, c, precision, np.random.default_rng(seed))

    def dense(x, kernel):
        return _dense_conv(x, kernel, groups, lax_precision)

    def delta(values, mask, kernel):
        return ops.conv(ops.Delta(values, mask), kernel, groups=groups, precision=lax_precision)

    dense_s = median_time(dense, frame, kernel, target_s=seconds)
    rows = []
    for p in fractions:
        mask = jnp.asarray(MASKS[masks](n, h, w, p, seed=seed + 1))
        out_mask = jax.jit(delta)(frame, mask, kernel).mask
        active_out = float(jnp.sum(out_mask))
        delta_s = median_time(delta, frame, mask, kernel, target_s=seconds)
        tflops = conv_flops(active_out, k, c // groups, c) / delta_s / 1e12
        row = _row(layer, shape, c, precision, p, active_out / (n * h * w), dense_s, delta_s, tflops_active=tflops)
        if sparse_baseline and 0 < p < 1:
            count = int(active_out)
            sparse = jax.jit(
                lambda v, m, k, count=count: sparse_jax_conv(
                    v, m, k, count=count, groups=groups, precision=lax_precision
                )
            )
            # Few repetitions: each materialises a full-size output, which XLA may keep alive together.
            row["sparse_jax_ms"] = median_time(sparse, frame, mask, kernel, target_s=seconds, max_reps=4) * 1e3
        if trace:
            row.update(traced_calls(repeated(delta, TRACE_CALLS), lambda mask=mask: (frame, mask, kernel), trace, row))
        rows.append(row)
    return rows


def add_cross_precision(rows):
    """Speedup against the fastest dense mode of the same case (any precision)."""
    fastest = {}
    for r in rows:
        key = (r["layer"], r["n"], r["h"], r["w"], r["c"])
        fastest[key] = min(fastest.get(key, np.inf), r["dense_ms"])
    for r in rows:
        r["speedup_vs_fastest_dense"] = fastest[(r["layer"], r["n"], r["h"], r["w"], r["c"])] / r["delta_ms"]


def table(rows) -> str:
    head = (
        f"{'layer':13} {'NxHxW':>12} {'C':>4} {'prec':>11} {'p':>5} {'p_out':>6} {'dense ms':>9} "
        f"{'delta ms':>9} {'x dense':>8} {'x fastest':>9} {'1/p':>6} {'TFLOP/s':>8} {'jax-sparse':>10} {'GB/s':>7} "
        f"{'kernels':>7} {'kernel us':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ideal = f"{r['ideal']:.0f}" if r["ideal"] else "-"
        sparse = f"{r['sparse_jax_ms']:.3f}" if "sparse_jax_ms" in r else "-"
        gbps = f"{r['gbps_active']:.0f}" if "gbps_active" in r else "-"
        kernels = f"{r['kernels_per_call']:.1f}" if "kernels_per_call" in r else "-"
        kernel_us = f"{r['kernel_us_per_call']:.1f}" if "kernel_us_per_call" in r else "-"
        lines.append(
            f"{r['layer']:13} {r['n']}x{r['h']}x{r['w']:>4} {r['c']:>4} {r['precision']:>11} {r['p']:5.2f} "
            f"{r['p_out']:6.3f} {r['dense_ms']:9.3f} {r['delta_ms']:9.3f} {r['speedup']:8.2f} "
            f"{r['speedup_vs_fastest_dense']:9.2f} {ideal:>6} {r['tflops_active']:8.3f} {sparse:>10} {gbps:>7} "
            f"{kernels:>7} {kernel_us:>9}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu" if jax.default_backend() == "gpu" else "cpu")
    parser.add_argument("--quick", action="store_true", help="one small shape, for smoke tests")
    layers = ",".join([*LAYERS, *ACTIVATIONS, *FUSED])
    parser.add_argument("--layers", default=layers, help="comma-separated subset of " + layers)
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--masks", choices=sorted(MASKS), default="blob", help="the changed pixels' shape")
    parser.add_argument(
        "--fractions", type=fraction_list, help="comma-separated update fractions in [0, 1], in place of the preset's"
    )
    parser.add_argument(
        "--trace",
        metavar="DIR",
        help="also trace each row's delta calls with the JAX profiler into DIR and add one call's kernels to the row",
    )
    native_check.add_arguments(parser, require_by_default=True)
    args = parser.parse_args(argv)
    native_check.check("python -m benchmarks.kernels", args.require_native)
    preset = (QUICK if args.quick else PRESETS)[args.preset]
    if args.fractions is not None:
        preset = dataclasses.replace(preset, fractions=args.fractions)
    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}", flush=True)
    rows = []
    for shape in preset.shapes:
        for layer in args.layers.split(","):
            for c in preset.channels:
                case_rows = []
                for precision in preset.precisions:
                    case_rows += run_case(
                        layer,
                        shape,
                        c,
                        precision,
                        preset.fractions,
                        preset.sparse_baseline,
                        seconds=preset.seconds,
                        masks=args.masks,
                        trace=args.trace,
                    )
                add_cross_precision(case_rows)
                print(table(case_rows).split("\n", 2)[2], flush=True)
                rows += case_rows
                _write(args, device, rows)  # after every case: partial runs count
    print(table(rows))
    return 0


def _write(args, device, rows) -> None:
    if args.out:
        meta = {
            "device": device.device_kind,
            "backend": jax.default_backend(),
            "jax": jax.__version__,
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "preset": args.preset,
            "quick": args.quick,
            "masks": args.masks,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),  # both sides ran under them
            "trace_calls": TRACE_CALLS if args.trace else None,  # delta calls per traced program
        }
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
