"""The demo: a pretrained CNN on a video, dense and delta side by side.

``deltajax demo`` decodes a clip (the bundled one by default) and runs a
pretrained model densely and as a delta model on the same frames: by default
Real-ESRGAN's compact x4 video super-resolution network (``--model superres``:
the clip downscaled to ``--size`` in, 4x that size out), or EfficientNet-Lite0,
MobileNetV2, or OpenPose MobileNet-thin (``--model pose``). It reports frames
per second of each, the speedup, the task's agreement with dense (superres: PSNR
of delta against dense and the largest 8-bit error, and the PSNR of dense, delta
and a bicubic upscale against the clip at the output size; classifiers: top-1
agreement and logit error; pose: keypoint agreement, pixel error, heatmap/PAF
error) and the per-layer active-pixel fractions; it writes a picture (PNG) and
an animation (GIF) of the updated input pixels over the frames, next to the
super-resolved frames (superres) or the skeletons drawn on the frames (pose).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from deltajax import native_check
from deltajax._cli import frame_size

MODELS = ("superres", "efficientnet_lite0", "mobilenet_v2", "pose")
# --size when not given: superres takes the clip downscaled 4x (the person clip's 432x768 is its output).
DEFAULT_SIZE = {"superres": "108x192"}
DEFAULT_SIZE_OTHERS = "216x384"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="deltajax demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--video", help="a video file (default: the bundled person-detection clip from frame 75)")
    p.add_argument("--start", type=int, help="first frame to use (default: where a bundled clip's action begins)")
    p.add_argument("--model", default="superres", choices=MODELS, help="default: superres (x4 super-resolution)")
    p.add_argument(
        "--thresholds",
        help="per-layer thresholds JSON from 'deltajax tune' (default: the tuned ones shipped for the model, if any)",
    )
    p.add_argument("--threshold", type=float, help="one threshold for the input and every layer (overrides JSON)")
    p.add_argument(
        "--size",
        help="HxW frames are resized to, or 'native'; for superres the low-resolution input, 4x that out "
        f"(default {DEFAULT_SIZE['superres']} for superres, else {DEFAULT_SIZE_OTHERS})",
    )
    p.add_argument("--frames", type=int, default=60, help="at most this many frames (default 60)")
    p.add_argument("--streams", type=int, default=1, help="batch of independent streams (the clip, time-shifted)")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--out", default="deltajax_demo", help="folder for the PNG, GIF and JSON (default ./deltajax_demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    native_check.add_arguments(p, require_by_default=False)
    args = p.parse_args(argv)
    if args.size is None:
        args.size = DEFAULT_SIZE.get(args.model, DEFAULT_SIZE_OTHERS)
    return args


def _size(text: str) -> tuple[int, int] | None:
    if text == "native":
        return None
    try:
        return frame_size(text)
    except argparse.ArgumentTypeError:
        raise SystemExit(
            f"deltajax demo: --size must be HxW of positive ints (e.g. 216x384) or 'native', got {text!r}"
        ) from None


def _progress(iterable, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit="frame", disable=disable, leave=False)


def _timed_loop(fn, frames, desc, disable):
    """Runs ``fn(t, frame)`` over frames (compiled beforehand); returns the seconds of each frame."""
    seconds = []
    for t in _progress(range(len(frames)), desc, disable):
        t0 = time.perf_counter()
        fn(t, frames[t])
        seconds.append(time.perf_counter() - t0)
    return np.asarray(seconds)


def run(args: argparse.Namespace) -> dict:
    """Runs the demo; returns the report (also written as JSON)."""
    size = _size(args.size)
    if args.backend != "auto":
        import jax

        jax.config.update("jax_platforms", args.backend if args.backend == "cpu" else "cuda")
    native_check.check("deltajax demo", args.require_native)
    import jax
    import jax.numpy as jnp

    import deltajax
    from deltajax import models, tune
    from deltajax.video import ACTION_START, bundled_clip, read_clip, time_shifted_streams

    os.makedirs(args.out, exist_ok=True)
    video = args.video or bundled_clip("people")
    start = args.start if args.start is not None else ACTION_START.get(os.path.basename(video), 0)
    clip = read_clip(video, start=start, max_frames=args.frames, size=size)
    if len(clip) < 2:
        raise SystemExit("deltajax demo: the video needs at least 2 frames")
    module, variables, preprocess = models.load(args.model)
    frames = jnp.asarray(
        time_shifted_streams(np.asarray(preprocess(jnp.asarray(clip))), args.streams)
    )  # [T, S, H, W, 3]

    if args.threshold is not None:
        config = deltajax.DeltaConfig(threshold=args.threshold, truncation=deltajax.Truncation("max", args.threshold))
    else:
        config = (
            tune.load_thresholds(args.thresholds)
            if args.thresholds
            else tune.shipped_thresholds(args.model, tuple(frames.shape[2:4]), video)
        )
    stepper = deltajax.delta(module.apply, config=config)

    dense_fn = jax.jit(lambda f: module.apply(variables, f))
    start_fn = jax.jit(lambda f: stepper.init_with_stats(variables, f))
    step_fn = jax.jit(lambda s, f: stepper.step_with_stats(s, variables, f), donate_argnums=0)

    compile_s = {}
    t0 = time.perf_counter()
    jax.block_until_ready(dense_fn(frames[0]))
    compile_s["dense"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, state, _ = jax.block_until_ready(start_fn(frames[0]))
    jax.block_until_ready(step_fn(state, frames[1]))
    compile_s["delta"] = time.perf_counter() - t0

    dense_out = [None] * len(frames)

    def dense_frame(t, frame):
        dense_out[t] = jax.block_until_ready(dense_fn(frame))

    dense_s = _timed_loop(dense_frame, frames, "dense", args.no_progress)

    delta_out, layer_stats, holder = [None] * len(frames), [], {}

    def delta_frame(t, frame):
        if t == 0:
            out, holder["state"], stats = start_fn(frame)
        else:
            out, holder["state"], stats = step_fn(holder["state"], frame)
        delta_out[t] = jax.block_until_ready(out)
        layer_stats.append(stats)

    delta_s = _timed_loop(delta_frame, frames, "delta", args.no_progress)

    dense_out, delta_out = np.stack(dense_out), np.stack(delta_out)  # [T, S, ...]
    stats = jax.tree_util.tree_map(lambda *a: np.stack(a), *layer_stats[1:])  # delta frames only
    report = {
        "model": args.model,
        "video": os.path.basename(video) + (f" from frame {start}" if start else ""),
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "frames": int(len(frames)),
        "streams": args.streams,
        "size": list(frames.shape[2:4]),
        "dense_fps": float(len(frames) * args.streams / dense_s.sum()),
        "delta_fps": float((len(frames) - 1) * args.streams / delta_s[1:].sum()),
        **deltajax.stats.task_metric(args.model, delta_out, dense_out),
        "mac_ratio": deltajax.stats.mac_ratio(stats),
        "compile_s": compile_s,
        "layers_active": {name: float(np.mean(s.active)) for name, s in stats.items()},
        "fallback_layers": deltajax.stats.fallback_layers(stats),
    }
    report["speedup"] = report["delta_fps"] / report["dense_fps"]
    if args.model == "superres":
        original = _original_clip(video, start, len(clip), size)
        report.update(_superres_quality(clip, original, dense_out, delta_out, args.streams))
    shown, captions = _annotated(args.model, np.asarray(clip), delta_out, dense_out)
    _write_pictures(args.out, shown, _input_masks(config, frames), captions)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report


def _original_clip(video: str, start: int, frames: int, size: tuple[int, int] | None) -> np.ndarray | None:
    """Super-resolution's reference: the clip read again at the output size (4x ``size``; the reader resizes
    from the decoded frames both times), ``[T, 4H, 4W, 3]`` uint8; None for ``--size native``, which has no
    original at 4x its size."""
    from deltajax.models import superres
    from deltajax.video import read_clip

    if size is None:
        return None
    return read_clip(video, start=start, max_frames=frames, size=(superres.SCALE * size[0], superres.SCALE * size[1]))


def _bicubic(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 RGB ``images`` ``[..., H, W, 3]`` resized bicubically to ``shape``, in [0, 1]: what super-resolution is
    compared with."""
    import jax
    import jax.numpy as jnp

    return np.asarray(jax.image.resize(jnp.asarray(images, jnp.float32) / 255.0, shape, method="bicubic"))


def _superres_quality(clip: np.ndarray, original: np.ndarray | None, dense, delta, streams: int) -> dict:
    """Report fields of super-resolution against the original clip: ``output_size`` and, given ``original``
    ``[T, 4H, 4W, 3]``, the PSNR (8-bit outputs) of the dense and delta outputs ``[T, S, 4H, 4W, 3]`` in [0, 1]
    and of the input ``clip`` ``[T, H, W, 3]`` upscaled bicubically (``psnr_*_vs_original_db``)."""
    from deltajax import stats
    from deltajax.models import superres
    from deltajax.video import time_shifted_streams

    fields = {"output_size": list(dense.shape[-3:-1])}
    if original is None:
        return fields
    original = time_shifted_streams(original, streams)
    bicubic = _bicubic(time_shifted_streams(clip, streams), original.shape)
    for name, images in (("dense", dense), ("delta", delta), ("bicubic", bicubic)):
        fields[f"psnr_{name}_vs_original_db"] = stats.psnr_db(superres.to_uint8(images), original, peak=255.0)
    return fields


def _annotated(model: str, rgb: np.ndarray, outputs: np.ndarray, dense: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Frames of stream 0 as shown (superres: the input upscaled bicubically beside the delta outputs, ``[T, 4H,
    8W, 3]``; pose: skeletons drawn) and their captions (the prediction; superres: the PSNR against dense)."""
    if model == "superres":
        from deltajax import stats
        from deltajax.models import superres

        sr = superres.to_uint8(outputs[:, 0])
        side_by_side = np.concatenate([superres.to_uint8(_bicubic(rgb, sr.shape)), sr], axis=2)
        psnr = [stats.psnr_db(o[0], d[0]) for o, d in zip(outputs, dense, strict=True)]
        return side_by_side, [f"frame {t}: bicubic | x4, {p:.1f} dB vs dense" for t, p in enumerate(psnr)]
    if model == "pose":
        from deltajax import keypoints, skeletons
        from deltajax.models import pose

        drawn = np.stack([skeletons.draw(f, o[0], pose.LIMBS) for f, o in zip(rgb, outputs, strict=True)])
        counts = [sum(len(p) for p in keypoints.peaks(o[0])) for o in outputs]
        return drawn, [f"frame {t}: {n} keypoints" for t, n in enumerate(counts)]
    from deltajax import models

    labels = models.imagenet_labels()
    return rgb, [f"frame {t}: {labels[int(o[0].argmax())]}" for t, o in enumerate(outputs)]


def _input_masks(config, frames) -> np.ndarray:
    """Input-layer update masks of stream 0 ``[T, H, W]``: the pixels the network recomputes from (none on the
    first frame)."""
    from deltajax import ops

    masks = [np.zeros(frames.shape[2:4], bool)]
    _, state = ops.sparsify_init(frames[0][:1])
    cfg = ops.SparsifyConfig(config.threshold, config.dilation)
    for frame in frames[1:]:
        d, state = ops.sparsify(state, frame[:1], cfg)
        masks.append(np.asarray(d.mask[0]))
    return np.stack(masks)


def _write_pictures(out: str, shown: np.ndarray, masks: np.ndarray, captions: list[str]) -> None:
    """``updates.png`` (four frames, two when they are wide) and ``updates.gif`` (all) of the frames ``shown``
    ``[T, H, W, 3]`` with the update masks ``[T, h, w]``, upsampled by nearest to the frames' height (superres: 4x)
    and repeated across frames shown side by side (superres: bicubic | x4)."""
    from deltajax import pictures

    scale = shown.shape[1] // masks.shape[1]
    masks = masks.repeat(scale, axis=1).repeat(scale, axis=2)
    masks = np.tile(masks, (1, 1, shown.shape[2] // masks.shape[2]))
    columns = 2 if shown.shape[2] > 2 * shown.shape[1] else 4  # wide pictures (side by side): fewer, larger
    picks = np.linspace(1, len(shown) - 1, num=min(columns, len(shown) - 1)).round().astype(int)
    pictures.save_grid(os.path.join(out, "updates.png"), shown[picks], masks[picks], [captions[i] for i in picks])
    pictures.save_animation(os.path.join(out, "updates.gif"), shown, masks, captions)


def _task_line(report: dict) -> str:
    """The task's measure against dense as a line (superres: a second one against the original)."""
    if "psnr_vs_dense_db" in report:
        line = (
            f"PSNR of delta vs dense: {report['psnr_vs_dense_db']:.1f} dB   "
            f"max error: {report['max_error_8bit']:.3g} of 255 levels"
        )
        if "psnr_dense_vs_original_db" in report:
            line += (
                f"\nPSNR vs the original at {report['output_size'][0]}x{report['output_size'][1]}: "
                f"dense {report['psnr_dense_vs_original_db']:.2f} dB, delta {report['psnr_delta_vs_original_db']:.2f} "
                f"dB, bicubic upscale {report['psnr_bicubic_vs_original_db']:.2f} dB"
            )
        return line
    if "keypoint_agreement" in report:
        return (
            f"keypoint agreement with dense: {100 * report['keypoint_agreement']:.1f} % of "
            f"{report['keypoint_peaks']} peaks   matched peaks off by <= {report['keypoint_pixel_error_max']:.1f} px   "
            f"max error: heatmaps {report['heatmap_error']:.2e}, PAFs {report['paf_error']:.2e}"
        )
    return (
        f"top-1 agreement with dense: {100 * report['top1_agreement']:.1f} %   logit error (rel.): "
        f"max {report['logit_rel_error_max']:.2e}, mean {report['logit_rel_error_mean']:.2e}"
    )


def _size_text(report: dict) -> str:
    """``HxW``, with ``-> HxW`` of the output for super-resolution."""
    out = report.get("output_size")
    return "x".join(map(str, report["size"])) + (f" -> {out[0]}x{out[1]}" if out else "")


def format_report(report: dict, top: int = 8) -> str:
    lines = [
        f"{report['model']} on {report['video']}: {report['frames']} frames x {report['streams']} stream(s) at "
        f"{_size_text(report)}, {report['device']} ({report['backend']})",
        f"dense: {report['dense_fps']:.1f} frames/s   delta: {report['delta_fps']:.1f} frames/s   "
        f"speedup: {report['speedup']:.2f}x",
        _task_line(report),
        f"multiply-adds done / dense: {report['mac_ratio']:.3f}   compile: dense {report['compile_s']['dense']:.1f} s, "
        f"delta {report['compile_s']['delta']:.1f} s",
        "active pixels per layer (mean over delta frames), busiest first:",
    ]
    busiest = sorted(report["layers_active"].items(), key=lambda kv: -kv[1])[:top]
    lines += [f"  {v:6.1%}  {k}" for k, v in busiest]
    if report["fallback_layers"]:
        lines.append("ran densely (no delta rule): " + ", ".join(report["fallback_layers"]))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    report = run(args)
    print(format_report(report))
    print(f"wrote {args.out}/updates.png, {args.out}/updates.gif, {args.out}/report.json")
    return 0
