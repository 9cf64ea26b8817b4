"""The demo: a pretrained CNN on a video, dense and delta side by side.

``deltajax demo`` decodes a clip (the bundled one by default), runs
EfficientNet-Lite0 (or MobileNetV2, or OpenPose MobileNet-thin with
``--model pose``) densely and as a delta model on the same frames, and reports
frames per second of each, the speedup, the top-1 agreement and logit error
against dense (pose: keypoint agreement, pixel error, heatmap/PAF error), and
the per-layer active-pixel fractions; it writes a picture (PNG) and an animation (GIF) of the updated
pixels over the frames (pose: next to the skeletons drawn on the frames).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from deltajax import native_check


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="deltajax demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--video", help="a video file (default: the bundled person-detection clip from frame 75)")
    p.add_argument("--start", type=int, help="first frame to use (default: where a bundled clip's action begins)")
    p.add_argument("--model", default="efficientnet_lite0", choices=["efficientnet_lite0", "mobilenet_v2", "pose"])
    p.add_argument(
        "--thresholds",
        help="per-layer thresholds JSON from 'deltajax tune' (default: the tuned ones shipped for the model, if any)",
    )
    p.add_argument("--threshold", type=float, help="one threshold for the input and every layer (overrides JSON)")
    p.add_argument("--size", default="216x384", help="HxW frames are resized to (default 216x384), or 'native'")
    p.add_argument("--frames", type=int, default=60, help="at most this many frames (default 60)")
    p.add_argument("--streams", type=int, default=1, help="batch of independent streams (the clip, time-shifted)")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--out", default="deltajax_demo", help="folder for the PNG, GIF and JSON (default ./deltajax_demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    native_check.add_arguments(p, require_by_default=False)
    return p.parse_args(argv)


def _size(text: str) -> tuple[int, int] | None:
    if text == "native":
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"deltajax demo: --size must be HxW (e.g. 216x384) or 'native', got {text!r}") from None
    return h, w


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
    if args.backend != "auto":
        import jax

        jax.config.update("jax_platforms", args.backend if args.backend == "cpu" else "cuda")
    native_check.check("deltajax demo", args.require_native)
    import jax
    import jax.numpy as jnp

    import deltajax
    from deltajax import models, pictures, tune
    from deltajax.video import ACTION_START, bundled_clip, read_clip, time_shifted_streams

    os.makedirs(args.out, exist_ok=True)
    video = args.video or bundled_clip("people")
    start = args.start if args.start is not None else ACTION_START.get(os.path.basename(video), 0)
    clip = read_clip(video, start=start, max_frames=args.frames, size=_size(args.size))
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

    dense_logits = [None] * len(frames)

    def dense_frame(t, frame):
        dense_logits[t] = jax.block_until_ready(dense_fn(frame))

    dense_s = _timed_loop(dense_frame, frames, "dense", args.no_progress)

    delta_logits, layer_stats, holder = [None] * len(frames), [], {}

    def delta_frame(t, frame):
        if t == 0:
            out, holder["state"], stats = start_fn(frame)
        else:
            out, holder["state"], stats = step_fn(holder["state"], frame)
        delta_logits[t] = jax.block_until_ready(out)
        layer_stats.append(stats)

    delta_s = _timed_loop(delta_frame, frames, "delta", args.no_progress)

    dense_logits, delta_logits = np.stack(dense_logits), np.stack(delta_logits)  # [T, S, ...]
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
        **deltajax.stats.task_metric(args.model, delta_logits, dense_logits),
        "mac_ratio": deltajax.stats.mac_ratio(stats),
        "compile_s": compile_s,
        "layers_active": {name: float(np.mean(s.active)) for name, s in stats.items()},
        "fallback_layers": deltajax.stats.fallback_layers(stats),
    }
    report["speedup"] = report["delta_fps"] / report["dense_fps"]
    rgb, captions = _annotated(args.model, np.asarray(clip), delta_logits)
    _write_pictures(args, config, frames, rgb, captions, pictures)
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report


def _annotated(model: str, rgb: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Frames of stream 0 as shown (skeletons drawn for pose) and their captions (the prediction)."""
    if model == "pose":
        from deltajax import keypoints, skeletons
        from deltajax.models import pose

        drawn = np.stack([skeletons.draw(f, o[0], pose.LIMBS) for f, o in zip(rgb, outputs, strict=True)])
        counts = [sum(len(p) for p in keypoints.peaks(o[0])) for o in outputs]
        return drawn, [f"frame {t}: {n} keypoints" for t, n in enumerate(counts)]
    from deltajax import models

    labels = models.imagenet_labels()
    return rgb, [f"frame {t}: {labels[int(o[0].argmax())]}" for t, o in enumerate(outputs)]


def _write_pictures(args, config, frames, rgb, captions, pictures) -> None:
    """Input-layer update masks of stream 0 (the pixels the network recomputes from), as PNG and GIF."""
    from deltajax import ops

    masks = [np.zeros(rgb.shape[1:3], bool)]
    _, state = ops.sparsify_init(frames[0][:1])
    cfg = ops.SparsifyConfig(config.threshold, config.dilation)
    for frame in frames[1:]:
        d, state = ops.sparsify(state, frame[:1], cfg)
        masks.append(np.asarray(d.mask[0]))
    masks = np.stack(masks)
    picks = np.linspace(1, len(rgb) - 1, num=min(4, len(rgb) - 1)).round().astype(int)
    pictures.save_grid(os.path.join(args.out, "updates.png"), rgb[picks], masks[picks], [captions[i] for i in picks])
    pictures.save_animation(os.path.join(args.out, "updates.gif"), rgb, masks, captions)


def _task_line(report: dict) -> str:
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


def format_report(report: dict, top: int = 8) -> str:
    lines = [
        f"{report['model']} on {report['video']}: {report['frames']} frames x {report['streams']} stream(s) at "
        f"{report['size'][0]}x{report['size'][1]}, {report['device']} ({report['backend']})",
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
