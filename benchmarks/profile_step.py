"""Where one frame step of a bundled model spends its time: GPU kernels, or XLA:CPU's thunks on a CPU.

    python -m benchmarks.profile_step [--model M] [--video FILE] [--streams N] [--size HxW] [--precision P]
        [--thresholds FILE] [--clip-stats] [--trace DIR] [--clip-trace DIR] [--out FILE.json]

It times, in one process: a dense frame, a delta step with no change ("still", with the host's floor under it:
a step that does no work over the same state), a delta step of the clip
("moving": one frame forward or back), and with ``--clip-stats`` a whole ``run_clip`` of a still clip with and
without per-layer stats. With ``--trace DIR`` it also records one still and one moving step with the JAX
profiler and adds, for each, the device's kernels grouped by name (count and total time), longest first. With
``--clip-trace DIR`` it traces the end-to-end benchmark's two programs over the clip (dense ``lax.map``, delta
``run_clip``) and gives, per frame, their kernels, kernel time, and the gaps in which the device waited.
(ncu crashed under this JAX program on the H100 machine, 2026-11-25; the profiler's trace needs no counters.)
"""

from __future__ import annotations

import argparse
import collections
import glob
import itertools
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

import deltajax
from deltajax import native_check, tune
from deltajax._cli import frame_size
from deltajax.benchmark import (
    _precision_scope,
    _still_step_seconds,
    delta_clip_program,
    dense_clip_program,
    load_clip,
)
from deltajax.video import streaming

_CUSTOM_CALL = re.compile(r"^\s*%?([\w.\-]+) = (.*?) custom-call\(.*custom_call_target=\"(\w+)\"", re.M)


def custom_call_labels(hlo_text: str) -> dict[str, str]:
    """``{op name: "target first-output-shape"}`` for the custom calls of compiled HLO text: on the CPU the
    profiler names a thunk only by its op (``ffi_call.372``), this says which kernel and layer it was."""
    labels = {}
    for name, shape, target in _CUSTOM_CALL.findall(hlo_text):
        first = re.search(r"\w+\[[\d,]*\]", shape)
        labels[name] = f"{target} {first.group(0) if first else ''}"
    return labels


def trace_events(trace_dir: str, planes: str = "/device:", labels: dict | None = None) -> list[tuple[int, int, str]]:
    """``(start_ns, duration_ns, "kernel | hlo_op")`` of each kernel in a JAX profiler trace, on the planes whose
    names start with ``planes`` (on the host plane: XLA's thunks only), the op named by ``labels`` where it has
    one (``custom_call_labels``), in order of their start."""
    from jax.profiler import ProfileData

    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    events = []
    for plane in ProfileData.from_file(path).planes:
        if not plane.name.startswith(planes):
            continue
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if not planes.startswith("/device:") and "hlo_op" not in stats:
                    continue  # on the host plane, XLA's thunks carry their HLO op; Python frames do not
                op = str(stats.get("hlo_op", ""))
                events.append((event.start_ns, event.duration_ns, f"{event.name[:90]} | {(labels or {}).get(op, op)}"))
    return sorted(events)


def kernel_table(
    trace_dir: str, top: int = 40, planes: str = "/device:", labels: dict | None = None, steps: int | None = None
) -> dict:
    """The kernels of ``trace_events``: their number, total milliseconds and the ``top`` groups by (kernel, HLO
    op); ``span_ms`` from the first kernel's start to the last one's end, and ``busy_ms`` of it with a kernel
    running (the rest: gaps, waiting on the host). With ``steps`` (the trace holds that many equal steps) also
    ``timeline``, one step's kernels in order (``step_timeline``)."""
    events = trace_events(trace_dir, planes, labels)
    groups: dict = collections.defaultdict(lambda: [0, 0.0])
    for _, duration_ns, key in events:
        groups[key][0] += 1
        groups[key][1] += duration_ns * 1e-6
    ordered = sorted(groups.items(), key=lambda kv: -kv[1][1])
    span_ms, busy_ms = _span_and_busy_ms([(start, start + duration) for start, duration, _ in events])
    table = {
        "kernels": len(events),
        "kernel_ms": sum(ms for _, ms in groups.values()),
        "span_ms": span_ms,
        "busy_ms": busy_ms,
        "top": [{"kernel | hlo_op": k, "count": n, "ms": ms} for k, (n, ms) in ordered[:top]],
    }
    if steps:  # per step: the span, the time with a kernel running, the rest; then one step's kernels in order
        span_us, busy_us, kernels = span_ms * 1e3 / steps, busy_ms * 1e3 / steps, step_timeline(events, steps)
        table["timeline"] = {
            "span_us": span_us,
            "busy_us": busy_us,
            "gap_us": span_us - busy_us,
            "kernels": kernels,
            "host_turns": host_turns(kernels),
        }
    return table


def step_timeline(events: list[tuple[int, int, str]], steps: int) -> list[dict]:
    """One step of ``events`` (``trace_events``' of ``steps`` equal steps): the ``len(events) // steps`` events
    from the middle step's first on, in order, each ``{"kernel | hlo_op", "us", "gap_us"}`` (gap: microseconds
    since the previous one ended, negative where they overlapped; on a GPU a long one is the host's turn, such as a
    loop predicate's round trip). Where a step's time goes launch by launch, which the grouped ``top`` hides: each
    layer's kernels at a small change, for example."""
    if steps < 1 or len(events) < steps:
        raise ValueError(
            f"benchmarks.profile_step.step_timeline: argument 'steps' must be between 1 and the number of events "
            f"({len(events)}), got {steps}"
        )
    per_step = len(events) // steps
    first = (steps // 2) * per_step
    kernels, previous_end = [], None
    for start, duration, key in events[first : first + per_step]:
        gap = 0.0 if previous_end is None else (start - previous_end) * 1e-3
        kernels.append({"kernel | hlo_op": key, "us": duration * 1e-3, "gap_us": gap})
        previous_end = start + duration
    return kernels


READBACK = "MemcpyD2H"  # the profiler's name of a device-to-host copy on a GPU


def host_turns(kernels: list[dict], at_least_us: float = 5.0) -> dict:
    """The long gaps of one step's ``step_timeline`` (at least ``at_least_us`` microseconds each: the device idle
    while the host decides or launches), split by what ran before them: ``after_readback``, a device-to-host copy
    (on a GPU a loop's predicate, read back so that the host can decide the next launch), and ``other`` (the host
    launching the next command buffer, ...). Each ``{"count", "us"}``: where a step's idle time goes."""
    turns = {"after_readback": {"count": 0, "us": 0.0}, "other": {"count": 0, "us": 0.0}}
    for before, kernel in itertools.pairwise(kernels):
        if kernel["gap_us"] >= at_least_us:
            kind = turns["after_readback" if before["kernel | hlo_op"].startswith(READBACK) else "other"]
            kind["count"] += 1
            kind["us"] += kernel["gap_us"]
    return turns


def _span_and_busy_ms(intervals) -> tuple[float, float]:
    """(milliseconds from the first start to the last end, milliseconds covered by at least one interval) of
    ``(start_ns, end_ns)`` pairs; (0, 0) for none."""
    if not intervals:
        return 0.0, 0.0
    intervals = sorted(intervals)
    busy, (start, end) = 0, intervals[0]
    for s, e in intervals[1:]:
        if s > end:
            busy, start = busy + end - start, s
        end = max(end, e)
    busy += end - start
    return (end - intervals[0][0]) * 1e-6, busy * 1e-6


def traced_kernels(run, folder: str, lower, top: int = 40, steps: int | None = None) -> dict:
    """``kernel_table`` of one ``run()`` (which blocks) traced into ``folder``: the device's kernels on a GPU, else
    the host's thunks named by the custom calls of ``lower()`` (the ``jax.stages.Lowered`` program that ``run``
    calls); ``steps``: the call runs that many equal steps (adds ``timeline``)."""
    planes, labels = "/device:", None
    if jax.default_backend() != "gpu":
        planes, labels = "/host:CPU", custom_call_labels(lower().compile().as_text())
    options = jax.profiler.ProfileOptions()
    options.python_tracer_level = 0  # Python's calls are not read, and tracing them slows the run
    with jax.profiler.trace(folder, profiler_options=options):
        run()
    return kernel_table(folder, top=top, planes=planes, labels=labels, steps=steps)


def clip_trace(program, clip, variables, folder: str) -> dict:
    """One call of ``program(clip, variables)`` (the benchmark's dense ``lax.map`` or ``run_clip``, compiled
    here) timed and traced into ``folder``, per frame of ``clip`` ``[T, ...]``: the call's milliseconds, and its
    kernels' count, summed time, span and busy time (``kernel_table``); ``gap_ms``, the span not covered by a
    kernel, is where the device waited (on a GPU: for the host, a loop's or a conditional's predicate round
    trip)."""

    def run():
        jax.block_until_ready(program(clip, variables))

    frames = len(clip)
    call_ms = _per_call_ms(run, 5)  # its first call compiles: the trace below records a compiled call only
    table = traced_kernels(run, folder, lambda: program.lower(clip, variables), top=15)
    per_frame = {k: table[k] / frames for k in ("kernels", "kernel_ms", "span_ms", "busy_ms")}
    return {
        "call_ms_per_frame": call_ms / frames,
        **per_frame,
        "gap_ms": per_frame["span_ms"] - per_frame["busy_ms"],
        "top": [{**t, "count": t["count"] / frames, "ms": t["ms"] / frames} for t in table["top"]],
    }


def _per_call_ms(fn, runs: int) -> float:
    """Median milliseconds of ``fn()`` (which blocks) over ``runs`` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples)) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--video", help="the clip (default: the bundled person clip)")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--size", type=frame_size, default=(432, 768), help="HxW (default 432x768)")
    p.add_argument("--precision", default="bf16", choices=["f32_highest", "f32_default", "bf16"])
    p.add_argument("--thresholds", help="thresholds JSON (default: the shipped ones for the size, else exact)")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--trace", help="folder for JAX profiler traces of one still and one moving step")
    p.add_argument("--clip-stats", action="store_true", help="also time run_clip with and without stats")
    p.add_argument(
        "--clip-trace",
        help="folder for JAX profiler traces of the end-to-end benchmark's two programs over the clip (dense "
        "lax.map, delta run_clip): per frame, kernels, kernel time and the device's gaps",
    )
    p.add_argument("--out", help="write the timings as JSON here")
    native_check.add_arguments(p, require_by_default=True)
    args = p.parse_args(argv)
    native_check.check("python -m benchmarks.profile_step", args.require_native)

    size = args.size
    dtype = jnp.bfloat16 if args.precision == "bf16" else jnp.float32
    video = args.video or deltajax.video.bundled_clip("people")
    module, variables, clip = load_clip(args.model, video, args.streams, size, args.frames, dtype)
    config = (
        tune.load_thresholds(args.thresholds) if args.thresholds else tune.shipped_thresholds(args.model, size, video)
    )
    stepper = deltajax.delta(module.apply, config=config)
    start, step = streaming(stepper, variables)
    with _precision_scope(args.precision):
        state = [start(clip[0])[1]]

        def run_steps(frames):
            for frame in frames:
                out, state[0] = step(state[0], frame)
            jax.block_until_ready(out)

        run_steps(clip[1:-1])  # compiles; the state is now at the clip's last frame but one
        traces = {}
        if args.trace:

            def lower():
                return step.lower(state[0], clip[1])

            for kind, frame in (("still", clip[-2]), ("moving", clip[-1])):
                folder = os.path.join(args.trace, kind)
                traces[kind] = traced_kernels(lambda f=frame: run_steps([f]), folder, lower)
        else:
            run_steps(clip[-1:])
        # Back to the first frame and forward to the last again: every step is a one-frame change.
        there_and_back = [*clip[-2::-1], *clip[1:]]
        dense = jax.jit(module.apply)
        still_s, still_call_s = _still_step_seconds(stepper, variables, clip[-1])  # as the benchmark times them
        row = {
            "model": args.model,
            "case": f"{args.streams}x{size[1]}x{size[0]}",
            "precision": args.precision,
            "device": jax.devices()[0].device_kind,
            "thresholds": args.thresholds or "shipped",
            "dense_frame_ms": _per_call_ms(lambda: jax.block_until_ready(dense(variables, clip[1])), 20),
            "still_step_ms": still_s * 1e3,
            "still_call_ms": still_call_s * 1e3,  # the host's floor under it: a step that does no work
            "moving_step_ms": _per_call_ms(lambda: run_steps(there_and_back), 3) / len(there_and_back),
        }
        if args.clip_stats:
            still = jnp.broadcast_to(clip[:1], clip.shape)
            for stats in (False, True):
                fn = jax.jit(lambda c, v, s=stats: deltajax.run_clip(stepper, c, v, with_stats=s))
                row[f"run_clip_still_ms_per_frame_stats_{stats}"] = _per_call_ms(
                    lambda f=fn: jax.block_until_ready(f(still, variables)), 5
                ) / len(clip)
        row["traces"] = traces
        if args.clip_trace:  # the end-to-end benchmark's two programs, over the same clip
            programs = {"dense": dense_clip_program(module), "delta": delta_clip_program(stepper)}
            row["clip_traces"] = {
                name: clip_trace(program, clip, variables, os.path.join(args.clip_trace, name))
                for name, program in programs.items()
            }
    print(json.dumps(row, indent=1), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(row, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
