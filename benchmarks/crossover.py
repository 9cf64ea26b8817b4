"""At which fraction of changed input pixels a delta step costs as much as a dense frame.

    python -m benchmarks.crossover [--models M,...] [--size HxW] [--precisions P,...] [--fractions P,...]
        [--trace DIR] [--dense-from-stride S,...] [--out FILE.json]

For each bundled model and precision it times, in one process on one device: a dense frame (XLA), and a delta
step (threshold 0, every frame a delta step: ``keyframe_above=None``) between two frames that differ in round
blobs covering a fraction ``p`` of the pixels, for p from 0 to 1 (or those of ``--fractions``); and the same
frames as the default config runs them (``keyframe_above="auto"``: a changed frame busier than the platform's
crossover runs dense), the row "as configured", whose ratios say how much slower than dense XLA a clip changing
that much runs (the delta steps again where the platform's crossover is "never", as on the CPU). The crossover is
the input tile activity (``tile_activity``: the fraction of 16x16 tiles with a changed pixel) where the step's
time reaches the dense frame's (linear interpolation between the measured points); it is the value that
``DeltaConfig(keyframe_above="auto")`` uses on that platform (``deltajax/transform/_frames.py``).

With ``--dense-from-stride none,16,32`` each model and precision gives a row per value of
``DeltaConfig.dense_from_stride`` (the layers at that stride or coarser run densely at every step), the dense
frame timed once for them all and the row "as configured" given with the first.

With ``--trace DIR`` each row also lists the kernels of one delta step at the smallest nonzero fraction, where
the step costs what it costs with almost nothing changed (``kernels_per_step``, ``kernel_ms_per_step``, ``top``
per step), and ``timeline``: that step's span, busy time and gaps, its kernels in launch order with each one's
time and the gap before it (``benchmarks.profile_step.step_timeline``), and its gaps of 5 us or more split by
whether a device-to-host read-back (a loop predicate's, on a GPU) came before them (``host_turns``). On a GPU,
compile with autotuning at its default or with the convolutions out of the command buffers: with both
``--xla_gpu_autotune_level=0`` and ``CUDNN,CONVOLUTION`` command buffers, cuDNN failed to trace into a command
buffer on an H200 (status 5003).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

from benchmarks.profile_step import traced_kernels
from deltajax import crossover as measurement
from deltajax import native_check
from deltajax._cli import dense_strides, fraction_list, frame_size
from deltajax._native import default_platform
from deltajax.benchmark import PRECISIONS, _precision_scope, load_clip
from deltajax.timing import stepped_program
from deltajax.transform._frames import crossover_on
from deltajax.transform.config import DeltaConfig
from deltajax.video import bundled_clip

FRACTIONS = measurement.FRACTIONS


def measure(
    model: str,
    size: tuple[int, int],
    precision: str,
    trace: str | None = None,
    dense_from_stride: int | None = None,
    dense_s: float | None = None,
    as_configured: bool = True,
    fractions: tuple[float, ...] = FRACTIONS,
) -> dict:
    """Dense frame and delta-step seconds at each of ``fractions``, for one model and precision
    (``deltajax.crossover.measure``) under ``DeltaConfig(dense_from_stride=...)``; with ``trace`` (a folder) also
    the kernels of one step at the smallest nonzero fraction. ``dense_s``: the dense frame's seconds, already
    timed; ``as_configured``: also the frames as the default config runs them (the "configured" keys)."""
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    module, variables, clip = load_clip(model, bundled_clip("people"), 1, size, 1, dtype)
    frame = clip[0]
    config = DeltaConfig(dense_from_stride=dense_from_stride)
    with _precision_scope(precision):
        stepper = measurement.stepper_for(module.apply, config=config)
        curve = measurement.measure_stepper(stepper, variables, frame, fractions=fractions, dense_s=dense_s)
        extra = {}
        if as_configured:  # the default config ("auto": the platform's crossover decides which frames run dense)
            # where it sends no frame dense (the CPU's "auto"), its frames are the delta steps above
            never_dense = crossover_on(DeltaConfig().keyframe_above, default_platform()) is None
            configured = (
                curve
                if never_dense
                else measurement.measure_as_configured(
                    module.apply, variables, frame, config=config, fractions=fractions, dense_s=curve.dense_s
                )
            )
            extra = {
                "configured_ms": [s * 1e3 for s in configured.step_s],
                "configured_over_dense": list(configured.ratios),
            }
        kernels_at = min((f for f in fractions if f > 0), default=None)  # the smallest change: a nearly idle step
        if trace and kernels_at is not None:  # the round trip measure_stepper timed (its program compiled)
            step = measurement.round_trip(stepper, 1)
            other, _ = measurement.changed_frame(frame, kernels_at)
            state = jax.jit(stepper.init)(variables, frame)[1]
            extra["kernels_at"] = kernels_at
            extra.update(_step_kernels(step, state, (frame, other, variables, frame), trace))
    return {
        "model": model,
        "precision": precision,
        "size": list(size),
        "dense_from_stride": dense_from_stride,
        "dense_ms": curve.dense_s * 1e3,
        "fractions": list(curve.fractions),
        "tile_activity": list(curve.tile_activity),
        "delta_ms": [s * 1e3 for s in curve.step_s],
        "delta_over_dense": list(curve.ratios),
        "crossover": curve.crossover,
        **extra,
    }


def _step_kernels(round_trip, state, args: tuple, folder: str) -> dict:
    """The kernels of one delta step: one stepped program (``STEPS`` round trips) traced, counts per step."""
    many = stepped_program(round_trip, measurement.STEPS)  # compiled by measure_stepper

    def run():
        jax.block_until_ready(many(state, *args))

    steps = 2 * measurement.STEPS
    table = traced_kernels(run, folder, lambda: many.lower(state, *args), top=60, steps=steps)
    return {
        "kernels_per_step": table["kernels"] / steps,
        "kernel_ms_per_step": table["kernel_ms"] / steps,
        "top": [{**t, "count": t["count"] / steps, "ms": t["ms"] / steps} for t in table["top"]],
        "timeline": table["timeline"],
    }


def table(rows: list[dict]) -> str:
    """The rows (of one set of fractions) as text: delta step / dense frame at each fraction, the crossover."""
    fractions = rows[0]["fractions"] if rows else FRACTIONS
    head = f"{'model':18} {'prec':11} {'dense ms':>8} " + " ".join(f"{f'p={p:g}':>7}" for p in fractions)
    lines = [head + "  crossover", "-" * (len(head) + 11)]
    for r in rows:
        cells = " ".join(f"{x:7.2f}" for x in r["delta_over_dense"])
        cross = "never" if r["crossover"] is None else f"{r['crossover']:.3f}"
        tail = "" if r["dense_from_stride"] is None else f" (dense from stride {r['dense_from_stride']})"
        lines.append(f"{r['model']:18} {r['precision']:11} {r['dense_ms']:8.3f} {cells}  {cross}{tail}")
        tiles = " ".join(f"{t:7.2f}" for t in r["tile_activity"])
        lines.append(f"{'  tile activity':30} {'':8} {tiles}")
        if "timeline" in r:
            t = r["timeline"]
            read, other = t["host_turns"]["after_readback"], t["host_turns"]["other"]
            lines.append(
                f"  one step at p={r['kernels_at']:g}: {len(t['kernels'])} kernels, span {t['span_us']:.1f} us, "
                f"busy {t['busy_us']:.1f} us, gaps {t['gap_us']:.1f} us (the kernels in order: 'timeline' in the JSON)"
            )
            lines.append(
                f"    gaps of 5 us or more: {read['count']} after a read-back, {read['us']:.1f} us; "
                f"{other['count']} others, {other['us']:.1f} us"
            )
        if "configured_over_dense" in r:
            configured = " ".join(f"{x:7.2f}" for x in r["configured_over_dense"])
            lines.append(f"{'  as configured (auto)':30} {'':8} {configured}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.crossover", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="efficientnet_lite0,mobilenet_v2")
    p.add_argument("--size", type=frame_size, default=(432, 768), help="HxW (default 432x768)")
    p.add_argument("--precisions", help="comma-separated subset of " + ",".join(PRECISIONS))
    p.add_argument(
        "--fractions",
        type=fraction_list,
        default=FRACTIONS,
        help="comma-separated changed fractions of the pixels in [0, 1] (default: "
        + ",".join(map(str, FRACTIONS))
        + ")",
    )
    p.add_argument("--trace", help="folder for JAX profiler traces: list one delta step's kernels per row")
    p.add_argument(
        "--dense-from-stride",
        type=dense_strides,
        default=(None,),
        help="comma-separated DeltaConfig.dense_from_stride values, 'none' for off (default: none)",
    )
    p.add_argument("--out", help="write the rows as JSON here")
    native_check.add_arguments(p, require_by_default=True)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.trace and not any(f > 0 for f in args.fractions):
        p.error(f"--trace needs a fraction above 0 in --fractions (the step it traces), got {args.fractions}")
    native_check.check(p.prog, args.require_native)
    size = args.size
    gpu = jax.default_backend() == "gpu"
    precisions = args.precisions.split(",") if args.precisions else (PRECISIONS if gpu else ("f32_highest",))
    device = jax.devices()[0].device_kind
    print(f"device: {device} ({jax.default_backend()}), jax {jax.__version__}", flush=True)
    rows = []
    for model in args.models.split(","):
        for prec in precisions:
            dense_s = None
            for stride in args.dense_from_stride:
                suffix = "" if stride is None else f"_s{stride}"
                trace = os.path.join(args.trace, f"{model}_{prec}{suffix}") if args.trace else None
                first = dense_s is None  # the default config's frames once per model and precision
                rows.append(measure(model, size, prec, trace, stride, dense_s, first, args.fractions))
                dense_s = rows[-1]["dense_ms"] / 1e3
                print(table(rows[-1:]).split("\n", 2)[2], flush=True)
                if args.out:
                    with open(args.out, "w") as f:
                        meta = {"device": device, "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}
                        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
