"""End-to-end benchmark: pretrained CNNs on real clips, dense XLA vs delta, in one run on one device.

For each model, clip, case (1 stream at 768x432, 8 streams at 768x432, 1
stream upscaled to 1920x1080) and precision (float32 HIGHEST, float32
default = TF32 on tensor-core GPUs, bfloat16), it reports frames per second
of dense XLA and of the delta model (each over the whole clip in one jit),
the speedup, the active-pixel fractions, the task metric against dense (top-1
agreement and logit error; pose: keypoint agreement and heatmap/PAF error;
superres: PSNR against dense and the largest 8-bit error),
the cost of a frame with no change (streamed, and inside ``run_clip``; with
the floor of a streamed call, ``still_call_ms``: a step that does no work
over the same state), of a
keyframe inside ``run_clip`` (a stream's first frame: dense, every layer's
state built; what ``DeltaConfig.refresh_every`` costs once per period; the
call's own cost, ``call_ms``, taken off), and compile times.
``--rolling-refresh P`` also times the delta model with ``DeltaConfig.rolling_refresh``;
``--keyframe-above`` and ``--dense-from-stride`` override those fields of the
thresholds' config (each row records what ran). XLA_FLAGS apply to both sides
and are recorded in the JSON.

Usage: deltajax benchmark [--preset cpu|gpu] [--video FILE ...] [--rolling-refresh P]
                          [--keyframe-above auto|none|F] [--dense-from-stride S|none] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time

import numpy as np

from deltajax import native_check
from deltajax._cli import dense_stride, keyframe_above, positive_int

PRECISIONS = ("f32_highest", "f32_default", "bf16")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    streams: int
    size: tuple[int, int]  # (H, W)


CASES = {
    "1x768x432": Case("1x768x432", 1, (432, 768)),
    "8x768x432": Case("8x768x432", 8, (432, 768)),
    "1x1920x1080": Case("1x1920x1080 (upscaled)", 1, (1080, 1920)),
    "1x480x270": Case("1x480x270 -> 1920x1080", 1, (270, 480)),  # super-resolution input (x4 out)
    "1x384x216": Case("1x384x216", 1, (216, 384)),  # the smoke preset's: a quarter of 1x768x432's pixels
}
SUPERRES_CASES = ("1x480x270",)  # the cases of the superres model; the classifiers run the others
_UNSET = object()  # a command-line override not given ('none' is a value: None)


@dataclasses.dataclass(frozen=True)
class Preset:
    models: tuple[str, ...]
    cases: tuple[str, ...]
    precisions: tuple[str, ...]
    frames: int


PRESETS = {
    "gpu": Preset(
        ("efficientnet_lite0", "mobilenet_v2", "pose", "superres"),
        ("1x768x432", "8x768x432", "1x1920x1080", "1x480x270"),
        PRECISIONS,
        60,
    ),
    "cpu": Preset(
        ("efficientnet_lite0", "mobilenet_v2", "pose", "superres"), ("1x768x432", "1x480x270"), ("f32_highest",), 16
    ),
    "smoke": Preset(("efficientnet_lite0",), ("1x384x216",), ("f32_highest",), 3),
}


def _default_videos() -> list[str]:
    from deltajax.video import bundled_clip

    return [bundled_clip("people"), bundled_clip("asl")]


def _seconds(fn, *args, runs: int = 3) -> tuple[float, float, object]:
    """(first-call seconds incl. compile, median seconds of ``runs`` more calls, last result)."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - t0)
    return first, float(np.median(samples)), out


def _rounds(seconds_per_round: float, budget_s: float = 1.0) -> int:
    """How many rounds of ``_alternating_seconds`` fit in about ``budget_s``: 3 to 25."""
    return int(np.clip(budget_s / max(seconds_per_round, 1e-9), 3, 25))


def _alternating_seconds(fns, *args, runs: int = 7) -> list[float]:
    """Median seconds of each of ``fns`` (compiled already) over ``runs`` rounds that call each once in turn."""
    import jax

    samples = [[] for _ in fns]
    for _ in range(runs):
        for fn, times in zip(fns, samples, strict=True):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in samples]


def _still_step_seconds(stepper, variables, frame, steps: int = 10) -> tuple[float, float]:
    """Median seconds of one streamed step (``deltajax.streaming``, no statistics) on a frame equal to the last:
    every layer's mask is empty; and of a step that does no work over the same state (donated and returned as it
    is): the host's cost of a call that passes the state's buffers in and out, below which no streamed step
    goes. ``steps`` steps are queued per sample, so host dispatch overlaps the device."""
    import jax

    from deltajax.video import streaming

    start, step = streaming(stepper, variables)
    _, state = start(frame)
    null_step = jax.jit(lambda state, frame: (frame[(0,) * frame.ndim], state), donate_argnums=0)

    def queued(fn):
        def run():
            nonlocal state
            for _ in range(steps):
                out, state = fn(state, frame)
            return out

        return _seconds(run)[1] / steps

    return queued(step), queued(null_step)


def model_cases(model: str, cases) -> list[str]:
    """The cases of ``cases`` that ``model`` runs: super-resolution inputs for ``superres``, the others else."""
    return [c for c in cases if (c in SUPERRES_CASES) == (model == "superres")]


def _precision_scope(precision: str):
    import jax

    return jax.default_matmul_precision("highest") if precision == "f32_highest" else contextlib.nullcontext()


def load_clip(model: str, video: str, streams: int, size: tuple[int, int], frames: int, dtype):
    """``(module, variables, clip [T, streams, H, W, 3])``: a bundled model and ``frames`` frames of ``video``
    (from its action start), preprocessed, as ``streams`` time-shifted streams, all in ``dtype``."""
    import jax
    import jax.numpy as jnp

    from deltajax import models
    from deltajax.video import ACTION_START, read_clip, time_shifted_streams

    module, variables, preprocess = models.load(model)
    rgb = read_clip(video, start=ACTION_START.get(os.path.basename(video), 0), max_frames=frames, size=size)
    clip = time_shifted_streams(np.asarray(preprocess(jnp.asarray(rgb))), streams)
    variables = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), variables)
    return module, variables, jnp.asarray(clip, dtype)


def dense_clip_program(module):
    """The dense side of a row: ``(clip [T, N, H, W, C], variables) -> outputs [T, ...]``, jitted, the plain
    model over the frames in one ``lax.map``."""
    import jax

    return jax.jit(lambda c, v: jax.lax.map(lambda f: module.apply(v, f), c))


def delta_clip_program(stepper):
    """The delta side of a row: ``(clip, variables) -> outputs [T, ...]``, jitted ``deltajax.run_clip``."""
    import jax

    import deltajax

    return jax.jit(lambda c, v: deltajax.run_clip(stepper, c, v))


def run_one(
    model: str, video: str, case: Case, precision: str, frames: int, config, rolling: int | None = None
) -> dict:
    """One row: dense vs delta for a model, clip, case and precision; with ``rolling``, the delta model also with
    ``DeltaConfig.rolling_refresh=rolling``. The programs' calls alternate, round after round (a difference of a
    few percent is below the spread between runs a minute apart on a shared CPU, and between processes on a
    GPU); the compile times come from each program's first call."""
    import jax
    import jax.numpy as jnp

    import deltajax

    dtype = jnp.bfloat16 if precision == "bf16" else jnp.float32
    module, variables, clip = load_clip(model, video, case.streams, case.size, frames, dtype)

    with _precision_scope(precision):
        dense = dense_clip_program(module)
        dense_first, dense_once, dense_out = _seconds(dense, clip, variables, runs=1)
        stepper = deltajax.delta(module.apply, config=config)
        # Timed as a user runs it, without the per-layer statistics: returning them is one output per layer and
        # field (on a GPU, ~8 ms per call for EfficientNet-Lite0: 0.4 ms per frame of a 20-frame clip). The row's
        # statistics come from one more run of the same clip.
        run = delta_clip_program(stepper)
        delta_first, delta_once, delta_out = _seconds(run, clip, variables, runs=1)
        compile_s = {"dense": dense_first - dense_once, "delta": delta_first - delta_once}
        programs = [dense, run]
        if rolling is not None:
            refreshed = deltajax.delta(module.apply, config=dataclasses.replace(config, rolling_refresh=rolling))
            programs.append(delta_clip_program(refreshed))
            jax.block_until_ready(programs[-1](clip, variables))  # compiled before the timed rounds
        # The programs are called in turn, round after round, so that a drift of the machine (clocks, other
        # tenants) reaches each alike; a GPU's 10-ms calls get up to 25 rounds, a CPU's seconds-long ones 3.
        times = _alternating_seconds(programs, clip, variables, runs=_rounds(dense_once + delta_once))
        dense_s, delta_s = times[:2]
        rolling_row = {}
        if rolling is not None:
            rolling_row = {"rolling_refresh": rolling, "rolling_fps": clip.shape[0] * clip.shape[1] / times[2]}
        _, stats = jax.block_until_ready(deltajax.run_clip(stepper, clip, variables, with_stats=True))
        still_s, still_call_s = _still_step_seconds(stepper, variables, clip[0])
        # In run_clip a still clip of T frames costs a keyframe (its first frame: dense, the state built) and T - 1
        # frames with no change, one of 2T frames T such frames more (one more compile: no frame timed elsewhere
        # separates the two exactly).
        still_s_t, still_s_2t = (_seconds(run, _still(clip, k), variables)[1] for k in (1, 2))
        no_change_s = max(still_s_2t - still_s_t, 0.0) / clip.shape[0]
        # What the still clip's call costs besides its frames (passing the parameters, waiting for the result),
        # which the first frame's figure used to include (1.99 ms against a 0.52-ms dense frame on an H100).
        call_s = _call_seconds(clip, variables)

    active = {name: float(np.mean(s.active[1:])) for name, s in stats.items()}
    convs = [v for k, v in active.items() if k.endswith("/conv")]
    n_frames = clip.shape[0] * clip.shape[1]
    return {
        "model": model,
        "video": os.path.basename(video),
        "case": case.name,
        "precision": precision,
        "frames": int(clip.shape[0]),
        "streams": case.streams,
        "size": list(case.size),
        "dense_fps": n_frames / dense_s,
        "delta_fps": n_frames / delta_s,
        "speedup": dense_s / delta_s,
        "still_frame_ms": still_s * 1e3,
        "still_call_ms": still_call_s * 1e3,
        "still_frame_in_clip_ms": no_change_s * 1e3,
        "keyframe_ms": (still_s_t - (clip.shape[0] - 1) * no_change_s - call_s) * 1e3,
        "call_ms": call_s * 1e3,
        "dense_frame_ms": dense_s / clip.shape[0] * 1e3,
        **rolling_row,
        **deltajax.stats.task_metric(model, delta_out, dense_out),
        "active_input": active.get("input", float("nan")),
        "active_conv_mean": float(np.mean(convs)),
        "mac_ratio": deltajax.stats.mac_ratio(jax.tree_util.tree_map(lambda a: a[1:], stats)),
        "compile_s": compile_s,
        "fallback_layers": deltajax.stats.fallback_layers(stats),
        "keyframe_above": _jsonable(config.keyframe_above),
        "dense_from_stride": _jsonable(config.dense_from_stride),
    }


def _jsonable(value):
    """A DeltaConfig field for the JSON: a per-platform mapping's sorted pairs as a dict, anything else as it is."""
    return dict(value) if isinstance(value, tuple) else value


def _call_seconds(clip, variables) -> float:
    """Median seconds of a jitted call over a clip program's arguments that does no work (it returns one element
    of ``clip``, every argument kept): what each call costs before any frame runs."""
    import jax

    probe = jax.jit(lambda c, v: c[(0,) * c.ndim], keep_unused=True)
    return _seconds(probe, clip, variables)[1]


def _still(clip, times: int):
    """``clip``'s first frame repeated ``times`` times as many frames as ``clip`` has."""
    import jax.numpy as jnp

    return jnp.broadcast_to(clip[:1], (times * clip.shape[0], *clip.shape[1:]))


def add_vs_fastest(rows: list[dict]) -> None:
    """Speedup of each delta row against the fastest dense precision of the same model, clip and case."""
    best: dict = {}
    for r in rows:
        key = (r["model"], r["video"], r["case"])
        best[key] = max(best.get(key, 0.0), r["dense_fps"])
    for r in rows:
        r["speedup_vs_fastest_dense"] = r["delta_fps"] / best[(r["model"], r["video"], r["case"])]


def _agreement(row: dict) -> float:
    """The task's agreement with dense: top-1 (classifiers), keypoint peaks (pose) or PSNR in dB (superres)."""
    return row[_first_key(row, "keypoint_agreement", "psnr_vs_dense_db", "top1_agreement")]


def _error(row: dict) -> float:
    """The task's max error against dense: relative logit error (classifiers), heatmap error (pose) or the
    largest error in 8-bit levels (superres)."""
    return row[_first_key(row, "heatmap_error", "max_error_8bit", "logit_rel_error_max")]


def _first_key(row: dict, *keys: str) -> str:
    """The first of ``keys`` that ``row`` has (the last one if none)."""
    return next((k for k in keys if k in row), keys[-1])


def table(rows: list[dict]) -> str:
    head = (
        f"{'model':18} {'clip':32} {'case':22} {'prec':11} {'dense fps':>9} {'delta fps':>9} {'x':>6} "
        f"{'x fastest':>9} {'agree':>6} {'max err':>9} {'act in':>6} {'act conv':>8} {'MACs':>5} "
        f"{'still ms':>8} {'in clip':>7} {'key ms':>7} {'rolling fps':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:18} {r['video'][:32]:32} {r['case']:22} {r['precision']:11} {r['dense_fps']:9.1f} "
            f"{r['delta_fps']:9.1f} {r['speedup']:6.2f} {r.get('speedup_vs_fastest_dense', float('nan')):9.2f} "
            f"{_agreement(r):6.3f} {_error(r):9.2e} {r['active_input']:6.3f} "
            f"{r['active_conv_mean']:8.3f} {r['mac_ratio']:5.2f} {r['still_frame_ms']:8.2f} "
            f"{r['still_frame_in_clip_ms']:7.2f} {r['keyframe_ms']:7.1f} {r.get('rolling_fps', float('nan')):11.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import jax

    p = argparse.ArgumentParser(prog="deltajax benchmark", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpu" if jax.default_backend() == "gpu" else "cpu")
    p.add_argument("--video", action="append", help="clip(s) (default: one-by-one-person-detection + bundled)")
    p.add_argument("--models", help="comma-separated subset of the preset's models")
    p.add_argument("--cases", help="comma-separated subset of " + ",".join(CASES))
    p.add_argument("--frames", type=int, help="frames per clip (default: the preset's)")
    p.add_argument("--precisions", help="comma-separated subset of " + ",".join(PRECISIONS))
    p.add_argument(
        "--thresholds", help="thresholds JSON for every model (default: the shipped ones tuned for the clip and size)"
    )
    p.add_argument(
        "--rolling-refresh",
        type=positive_int,
        metavar="P",
        help="also time the delta model with DeltaConfig.rolling_refresh=P, alternating with it off (default: not)",
    )
    p.add_argument(
        "--keyframe-above",
        type=keyframe_above,
        default=_UNSET,
        metavar="auto|none|F",
        help="DeltaConfig.keyframe_above for every row (default: the thresholds' own)",
    )
    p.add_argument(
        "--dense-from-stride",
        type=dense_stride,
        default=_UNSET,
        metavar="S|none",
        help="DeltaConfig.dense_from_stride for every row (default: the thresholds' own)",
    )
    p.add_argument("--out", help="write the rows as JSON here")
    native_check.add_arguments(p, require_by_default=True)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    native_check.check(p.prog, args.require_native)

    from deltajax import tune

    preset = PRESETS[args.preset]
    videos = args.video or _default_videos()
    models = args.models.split(",") if args.models else preset.models
    cases = args.cases.split(",") if args.cases else preset.cases
    frames = args.frames or preset.frames
    precisions = args.precisions.split(",") if args.precisions else preset.precisions
    device = jax.devices()[0].device_kind
    print(f"device: {device} ({jax.default_backend()}), jax {jax.__version__}", flush=True)
    rows = []
    for model in models:
        for video in videos:
            for case in model_cases(model, cases):
                size = CASES[case].size
                config = (
                    tune.load_thresholds(args.thresholds)
                    if args.thresholds
                    else tune.shipped_thresholds(model, size, clip=video)
                )
                config = _overridden(config, args)
                group = []
                for prec in precisions:
                    t0 = time.perf_counter()
                    group.append(run_one(model, video, CASES[case], prec, frames, config, args.rolling_refresh))
                    print(_progress(group[-1], time.perf_counter() - t0), file=sys.stderr, flush=True)
                    _write(args.out, device, args.preset, frames, rows + group)
                add_vs_fastest(group)
                print(table(group).split("\n", 2)[2], flush=True)
                rows += group
                _write(args.out, device, args.preset, frames, rows)  # after every group: partial runs count
    print(table(rows))
    return 0


def _overridden(config, args):
    """``config`` with the fields that the command line sets (``--keyframe-above``, ``--dense-from-stride``)."""
    fields = {}
    if args.keyframe_above is not _UNSET:
        fields["keyframe_above"] = args.keyframe_above
    if args.dense_from_stride is not _UNSET:
        fields["dense_from_stride"] = args.dense_from_stride
    return dataclasses.replace(config, **fields)


def _progress(row: dict, seconds: float) -> str:
    """One line per finished row, while the group's table waits for its other precisions."""
    return (
        f"[{seconds:.0f} s] {row['model']} {row['video']} {row['case']} {row['precision']}: "
        f"dense {row['dense_fps']:.1f} fps (compile {row['compile_s']['dense']:.1f} s), "
        f"delta {row['delta_fps']:.1f} fps (compile {row['compile_s']['delta']:.1f} s), "
        f"agreement {_agreement(row):.3f}"
    )


def _write(path, device, preset, frames, rows) -> None:
    if path:
        import jax

        with open(path, "w") as f:
            json.dump(
                {
                    "meta": {
                        "device": device,
                        "backend": jax.default_backend(),
                        "jax": jax.__version__,
                        "preset": preset,
                        "frames": frames,
                        "xla_flags": os.environ.get("XLA_FLAGS", ""),
                    },
                    "rows": rows,
                },
                f,
                indent=1,
            )
