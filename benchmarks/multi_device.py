"""Streams per second against the number of devices: dense XLA and delta, the streams split over a mesh.

For each frame size and device count M (1, 2, 4, 8, as many as there are), ``streams_per_device * M`` time-shifted
streams of a bundled clip run through a pretrained model (default EfficientNet-Lite0), the stream axis split
over the first M devices (``deltajax.sharding``): dense XLA as ``lax.map`` over frames inside the same
``shard_map``, delta as ``deltajax.run_clip(..., mesh=mesh)``, both over the whole clip in one jit, same
precision, same run. Reported per row: frames per second counting every stream, per device, the scaling
efficiency (per-device frames/s against one device's), delta's speedup over dense, top-1 agreement, compile
times. Rows are written to --out as they finish, so a run cut short keeps what it measured; --markdown writes
the table.

Usage: python -m benchmarks.multi_device [--devices 1,2,4,8] [--sizes 432x768,1080x1920] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

import deltajax
from deltajax import sharding, tune
from deltajax._cli import frame_size
from deltajax.benchmark import PRECISIONS, _precision_scope, _seconds, load_clip
from deltajax.video import bundled_clip


def device_counts(wanted: list[int], available: int) -> list[int]:
    """The counts of ``wanted`` this machine has, most telling first: the smallest, the largest, then the others
    ascending (a run cut short by its time limit still has the scaling end points)."""
    counts = sorted({m for m in wanted if 1 <= m <= available})
    if not counts:
        raise SystemExit(f"multi_device: argument '--devices' {wanted} names no count in 1..{available}")
    return [*counts[:1], *counts[1:][-1:], *counts[1:-1]]


def dense_program(module, mesh):
    """Dense XLA over a clip ``[T, N, H, W, C]``, each device mapping the model over its streams' frames."""
    over_streams = sharding.streams_spec(mesh, 1)

    def frames(clip, variables):
        return lax.map(lambda frame: module.apply(variables, frame), clip)

    return jax.jit(sharding.per_device(frames, mesh, (over_streams, PartitionSpec()), over_streams))


def run_row(module, variables, clip, config, mesh, precision: str) -> dict:
    """Dense and delta on ``clip`` (every stream of it) over ``mesh``: one row without its labels."""
    clip, variables = sharding.put_streams(clip, mesh, 1), sharding.put_replicated(variables, mesh)
    stepper = deltajax.delta(module.apply, config=config)
    with _precision_scope(precision):
        dense_first, dense_s, dense_out = _seconds(dense_program(module, mesh), clip, variables)
        delta_first, delta_s, delta_out = _seconds(
            lambda c, v: deltajax.run_clip(stepper, c, v, mesh=mesh), clip, variables
        )
    agreement, err = deltajax.stats.compare_outputs(delta_out, dense_out)
    frames = clip.shape[0] * clip.shape[1]
    return {
        "dense_fps": frames / dense_s,
        "delta_fps": frames / delta_s,
        "dense_fps_per_device": frames / dense_s / mesh.size,
        "delta_fps_per_device": frames / delta_s / mesh.size,
        "speedup": dense_s / delta_s,
        "top1_agreement": agreement,
        "logit_rel_error_max": float(err.max()),
        "compile_s": {"dense": dense_first - dense_s, "delta": delta_first - delta_s},
    }


def add_scaling(rows: list[dict]) -> None:
    """Per row, frames/s per device against the one-device row of the same size (dense and delta)."""
    single = {r["size_name"]: r for r in rows if r["devices"] == 1}
    for r in rows:
        one = single.get(r["size_name"])
        for side in ("dense", "delta"):
            r[f"{side}_scaling"] = r[f"{side}_fps_per_device"] / one[f"{side}_fps_per_device"] if one else None


def markdown(rows: list[dict], meta: dict) -> str:
    """The rows as a markdown table, sorted by size and device count."""
    lines = [
        f"{meta['model']}, {meta['precision']}, {meta['frames']} frames per stream, {meta['device']} "
        f"(frames/s count every stream; scaling = frames/s per device over one device's)",
        "",
        "| size | devices | streams | dense fps | delta fps | delta / dense | dense fps per device (scaling) | "
        "delta fps per device (scaling) | top-1 | compile s (dense / delta) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def scaling(value):
        return "" if value is None else f" ({value:.0%})"

    for r in sorted(rows, key=lambda r: (r["size_name"], r["devices"])):
        lines.append(
            f"| {r['size_name']} | {r['devices']} | {r['streams']} | {r['dense_fps']:.1f} | {r['delta_fps']:.1f} | "
            f"{r['speedup']:.2f}x | {r['dense_fps_per_device']:.1f}{scaling(r['dense_scaling'])} | "
            f"{r['delta_fps_per_device']:.1f}{scaling(r['delta_scaling'])} | {r['top1_agreement']:.0%} | "
            f"{r['compile_s']['dense']:.0f} / {r['compile_s']['delta']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _sizes(text: str) -> list[tuple[int, int]]:
    try:
        return [frame_size(s) for s in text.split(",")]
    except argparse.ArgumentTypeError:
        raise SystemExit(
            f"multi_device: argument '--sizes' must be HxW[,HxW...] of positive ints, got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    gpu = jax.default_backend() == "gpu"
    p = argparse.ArgumentParser(prog="python -m benchmarks.multi_device", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", default="1,2,4,8", help="device counts (those above the machine's are left out)")
    p.add_argument("--sizes", default="432x768,1080x1920", help="frame sizes HxW")
    p.add_argument("--streams-per-device", default="8,2", help="streams per device, one per size")
    p.add_argument("--frames", type=int, default=20 if gpu else 4, help="frames per stream")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16" if gpu else "f32_highest")
    p.add_argument("--model", default="efficientnet_lite0", help="a bundled model (deltajax.models)")
    p.add_argument("--video", default=None, help="clip (default: the bundled person clip)")
    p.add_argument("--exact", action="store_true", help="thresholds 0 (default: the shipped ones for the clip)")
    p.add_argument("--out", help="write the rows as JSON here")
    p.add_argument("--markdown", help="write the table as markdown here")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    import jax.numpy as jnp

    sizes = _sizes(args.sizes)
    per_device = [int(s) for s in args.streams_per_device.split(",")]
    if len(per_device) != len(sizes) or min(per_device) < 1:
        raise SystemExit(
            f"multi_device: argument '--streams-per-device' must give one positive count per size ({len(sizes)}), "
            f"got {args.streams_per_device!r}"
        )
    counts = device_counts([int(m) for m in args.devices.split(",")], jax.device_count())
    video = args.video or bundled_clip("people")
    dtype = jnp.bfloat16 if args.precision == "bf16" else jnp.float32
    meta = {
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
        "model": args.model,
        "video": os.path.basename(video),
        "precision": args.precision,
        "frames": args.frames,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    print(f"{meta['device']} x {jax.device_count()} ({meta['backend']}): device counts {counts}", flush=True)
    clips, rows = {}, []
    for m in counts:  # most telling counts first: every size at 1 device, then at the most, ...
        for size, streams in zip(sizes, per_device, strict=True):
            if size not in clips:  # one clip per size, as many streams as the largest mesh needs
                module, variables, clip = load_clip(args.model, video, streams * max(counts), size, args.frames, dtype)
                clips[size] = (module, variables, np.asarray(clip))
            module, variables, clip = clips[size]
            config = deltajax.DeltaConfig() if args.exact else tune.shipped_thresholds(args.model, size, clip=video)
            t0 = time.perf_counter()
            mesh = sharding.stream_mesh(jax.devices()[:m])
            row = run_row(module, variables, clip[:, : streams * m], config, mesh, args.precision)
            rows.append({"size_name": f"{size[1]}x{size[0]}", "size": list(size), "devices": m, **row})
            rows[-1].update(streams=streams * m, streams_per_device=streams)
            add_scaling(rows)
            print(
                f"[{time.perf_counter() - t0:.0f} s] {size[1]}x{size[0]}, {m} device(s), {streams * m} streams: "
                f"dense {row['dense_fps']:.1f} fps, delta {row['delta_fps']:.1f} fps ({row['speedup']:.2f}x), "
                f"top-1 {row['top1_agreement']:.3f}",
                flush=True,
            )
            _write(args, meta, rows)
    print(markdown(rows, meta))
    return 0


def _write(args, meta: dict, rows: list[dict]) -> None:
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, meta))


if __name__ == "__main__":
    raise SystemExit(main())
