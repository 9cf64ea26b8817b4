"""At which fraction of changed input pixels a delta step costs as much as a dense frame.

    python -m benchmarks.crossover [--models M,...] [--size HxW] [--precisions P,...] [--trace DIR]
        [--out FILE.json]

For each bundled model and precision it times, in one process on one device: a dense frame (XLA), and a delta
step (threshold 0, every frame a delta step: ``keyframe_above=None``) between two frames that differ in round
blobs covering a fraction ``p`` of the pixels, for p from 0 to 1. The crossover is the input tile activity
(``tile_activity``: the fraction of 16x16 tiles with a changed pixel) where the step's time reaches the dense
frame's (linear interpolation between the measured points); it is the value that
``DeltaConfig(keyframe_above="auto")`` uses on that platform (``deltajax/transform/_frames.py``).

With ``--trace DIR`` each row also lists the kernels of one delta step at the smallest nonzero fraction, where
the step costs what it costs with almost nothing changed (``kernels_per_step``, ``kernel_ms_per_step``, ``top``
per step). On a GPU, compile with autotuning at its default or with the convolutions out of the command
buffers: with both ``--xla_gpu_autotune_level=0`` and ``CUDNN,CONVOLUTION`` command buffers, cuDNN failed to
trace into a command buffer on an H200 (status 5003).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

import deltajax
from benchmarks.profile_step import traced_kernels
from benchmarks.timing import blob_mask, median_time, stepped_program, stepped_time
from deltajax import native_check
from deltajax._cli import frame_size
from deltajax.benchmark import PRECISIONS, _precision_scope, load_clip
from deltajax.transform._frames import tile_activity
from deltajax.video import bundled_clip

FRACTIONS = (0.0, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def changed_frame(frame: jax.Array, fraction: float, seed: int = 0) -> tuple[jax.Array, float]:
    """``frame`` ``[N, H, W, C]`` with round blobs covering ``fraction`` of the pixels changed, and the change's
    tile activity (what ``keyframe_above`` is compared with)."""
    n, h, w, c = frame.shape
    mask = jnp.asarray(blob_mask(n, h, w, fraction, seed))
    noise = jax.random.normal(jax.random.key(seed), frame.shape, jnp.float32) * 0.25
    return jnp.where(mask[..., None], frame + noise.astype(frame.dtype), frame), float(tile_activity(mask))


def crossover(fractions, ratios) -> float | None:
    """The fraction where ``ratios`` (delta time / dense time) first reaches 1 (None: never)."""
    for i in range(1, len(ratios)):
        (f0, r0), (f1, r1) = (fractions[i - 1], ratios[i - 1]), (fractions[i], ratios[i])
        if r0 < 1 <= r1:
            return f0 + (1 - r0) * (f1 - f0) / (r1 - r0)
    return 0.0 if ratios[0] >= 1 else None


STEPS = 16  # steps per stepped program (benchmarks.timing.stepped_time's default)


def measure(model: str, size: tuple[int, int], precision: str, trace: str | None = None) -> dict:
    """Dense frame and delta-step seconds at each of FRACTIONS, for one model and precision; with ``trace`` (a
    folder) also the kernels of one step at FRACTIONS[1]."""
    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    module, variables, clip = load_clip(model, bundled_clip("people"), 1, size, 1, dtype)
    frame = clip[0]
    config = deltajax.DeltaConfig(threshold=0.0, keyframe_above=None)
    stepper = deltajax.delta(module.apply, config=config)
    with _precision_scope(precision):
        dense_s = median_time(lambda v, f: module.apply(v, f), variables, frame)
        step_s, tiles = [], []

        def there_and_back(state, v, a, b):
            _, state = stepper(state, v, b)
            return stepper(state, v, a)

        init = jax.jit(stepper.init)
        kernels = None
        for p in FRACTIONS:
            other, tile = changed_frame(frame, p)
            tiles.append(tile)
            _, state = init(variables, frame)
            step_s.append(stepped_time(there_and_back, state, variables, frame, other, reps=STEPS) / 2)
            if trace and p == FRACTIONS[1]:
                kernels = _step_kernels(there_and_back, init(variables, frame)[1], (variables, frame, other), trace)
    ratios = [s / dense_s for s in step_s]
    extra = {} if kernels is None else {"kernels_at": FRACTIONS[1], **kernels}
    return {
        "model": model,
        "precision": precision,
        "size": list(size),
        "dense_ms": dense_s * 1e3,
        "fractions": list(FRACTIONS),
        "tile_activity": tiles,
        "delta_ms": [s * 1e3 for s in step_s],
        "delta_over_dense": ratios,
        "crossover": crossover(tiles, ratios),
        **extra,
    }


def _step_kernels(there_and_back, state, args: tuple, folder: str) -> dict:
    """The kernels of one delta step: one stepped program (``STEPS`` round trips) traced, counts per step."""
    many = stepped_program(there_and_back, STEPS)  # compiled by stepped_time

    def run():
        jax.block_until_ready(many(state, *args))

    table = traced_kernels(run, folder, lambda: many.lower(state, *args), top=60)
    steps = 2 * STEPS
    return {
        "kernels_per_step": table["kernels"] / steps,
        "kernel_ms_per_step": table["kernel_ms"] / steps,
        "top": [{**t, "count": t["count"] / steps, "ms": t["ms"] / steps} for t in table["top"]],
    }


def table(rows: list[dict]) -> str:
    head = f"{'model':18} {'prec':11} {'dense ms':>8} " + " ".join(f"{f'p={p:g}':>7}" for p in FRACTIONS)
    lines = [head + "  crossover", "-" * (len(head) + 11)]
    for r in rows:
        cells = " ".join(f"{x:7.2f}" for x in r["delta_over_dense"])
        cross = "never" if r["crossover"] is None else f"{r['crossover']:.3f}"
        lines.append(f"{r['model']:18} {r['precision']:11} {r['dense_ms']:8.3f} {cells}  {cross}")
        tiles = " ".join(f"{t:7.2f}" for t in r["tile_activity"])
        lines.append(f"{'  tile activity':30} {'':8} {tiles}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.crossover", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="efficientnet_lite0,mobilenet_v2")
    p.add_argument("--size", type=frame_size, default=(432, 768), help="HxW (default 432x768)")
    p.add_argument("--precisions", help="comma-separated subset of " + ",".join(PRECISIONS))
    p.add_argument("--trace", help="folder for JAX profiler traces: list one delta step's kernels per row")
    p.add_argument("--out", help="write the rows as JSON here")
    native_check.add_arguments(p, require_by_default=True)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    native_check.check(p.prog, args.require_native)
    size = args.size
    gpu = jax.default_backend() == "gpu"
    precisions = args.precisions.split(",") if args.precisions else (PRECISIONS if gpu else ("f32_highest",))
    device = jax.devices()[0].device_kind
    print(f"device: {device} ({jax.default_backend()}), jax {jax.__version__}", flush=True)
    rows = []
    for model in args.models.split(","):
        for prec in precisions:
            trace = os.path.join(args.trace, f"{model}_{prec}") if args.trace else None
            rows.append(measure(model, size, prec, trace))
            print(table(rows[-1:]).split("\n", 2)[2], flush=True)
            if args.out:
                with open(args.out, "w") as f:
                    meta = {"device": device, "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")}
                    json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
