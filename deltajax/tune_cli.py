"""``deltajax tune``: per-layer thresholds for a bundled model on a clip, saved as JSON, with the trade-off."""

from __future__ import annotations

import argparse
import dataclasses
import os

from deltajax import native_check
from deltajax._cli import dense_strides, frame_size


def _thresholds(p: argparse.ArgumentParser, flag: str, text: str) -> list[float]:
    """The comma-separated non-negative numbers of ``flag``; a usage error naming the flag otherwise."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(not v >= 0 for v in values):
        p.error(f"{flag} must be comma-separated non-negative numbers, e.g. 0.01,0.1, got {text!r}")
    return values


def _with_crossover(fn, variables, frame, config, strides=(None,)):
    """``config`` with ``keyframe_above`` set to the crossover measured for its thresholds on this device; with
    several ``strides`` (``DeltaConfig.dense_from_stride`` values, None: no dense tail) the one whose crossover is
    highest (a delta step cheaper than a dense frame on the busiest frames; the first listed on a tie) is stored
    for this platform with it."""
    from deltajax import crossover
    from deltajax._native import default_platform

    best = None
    for stride in strides:
        curve = crossover.measure(fn, variables, frame, config=dataclasses.replace(config, dense_from_stride=stride))
        tail = "" if stride is None else f" (dense from stride {stride})"
        for p, tiles, ratio in zip(curve.fractions, curve.tile_activity, curve.ratios, strict=True):
            changed = f"{p:.0%} of the pixels changed ({tiles:.0%} of the tiles)"
            print(f"crossover: {changed}: delta step {ratio:.2f}x dense{tail}")
        reach = 2.0 if curve.crossover is None else curve.crossover  # None: the step never costs a dense frame
        if best is None or reach > best[0]:
            best = (reach, stride, curve)
    _, stride, curve = best
    above = crossover.keyframe_above(curve, config.keyframe_above)
    if stride is not None:
        others = dict(config.dense_from_stride) if isinstance(config.dense_from_stride, tuple) else {}
        config = dataclasses.replace(config, dense_from_stride={**others, default_platform(): stride})
        print(f"crossover: dense_from_stride {dict(config.dense_from_stride)}")
    print(f"crossover: keyframe_above {above} (dense frame {curve.dense_s * 1e3:.2f} ms)")
    return dataclasses.replace(config, keyframe_above=above)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="deltajax tune", description=__doc__)
    p.add_argument(
        "--model", default="efficientnet_lite0", choices=["efficientnet_lite0", "mobilenet_v2", "pose", "superres"]
    )
    p.add_argument("--video", help="the clip to tune on (default: the bundled ASL clip)")
    p.add_argument("--size", type=frame_size, default=(216, 384), help="HxW to resize frames to (default 216x384)")
    p.add_argument("--start", type=int, default=0, help="first frame of the clip to tune on")
    p.add_argument("--frames", type=int, default=40, help="frames of the clip to tune on")
    p.add_argument(
        "--budget",
        choices=["noise", "absolute"],
        default="noise",
        help="noise: what dense itself keeps under --noise-levels of 8-bit input noise (measured on the clip); "
        "absolute: --min-top1 and --max-error",
    )
    p.add_argument("--noise-levels", type=float, default=1.0, help="input noise of the noise budget, 8-bit levels")
    p.add_argument(
        "--min-top1", type=float, default=0.99, help="absolute budget: minimum agreement (top-1; pose: keypoints)"
    )
    p.add_argument("--max-error", type=float, default=None, help="absolute budget: maximum relative logit error")
    p.add_argument(
        "--candidates", default="0.01,0.02,0.05,0.1,0.2,0.4", help="comma-separated thresholds of the layers"
    )
    p.add_argument(
        "--input-levels",
        default="0.5,1,2,4,8",
        help="comma-separated thresholds of the input, in 8-bit levels of the frame (converted to the model's "
        "input units: the smallest channel's level)",
    )
    p.add_argument(
        "--crossover",
        action="store_true",
        help="also measure on this device where the tuned model's delta step costs its dense frame "
        "(deltajax.crossover) and store it as keyframe_above for this platform",
    )
    p.add_argument(
        "--dense-tails",
        type=dense_strides,
        default=(None,),
        help="with --crossover: comma-separated DeltaConfig.dense_from_stride values to measure ('none': no dense "
        "tail); the one with the highest crossover is stored for this platform (default: none)",
    )
    p.add_argument("--out", default="deltajax_tune", help="folder for thresholds.json, tradeoff.png, table")
    native_check.add_arguments(p, require_by_default=False)
    args = p.parse_args(argv)
    native_check.check("deltajax tune", args.require_native)

    import jax.numpy as jnp

    from deltajax import models, tune
    from deltajax.video import read_clip

    candidates = _thresholds(p, "--candidates", args.candidates)
    if args.dense_tails != (None,) and not args.crossover:
        p.error("--dense-tails needs --crossover (it is chosen by measuring the crossover)")
    input_levels = _thresholds(p, "--input-levels", args.input_levels)
    metric = tune.METRICS[args.model]
    if args.budget == "absolute" and metric is tune.image_metric and args.max_error is None:
        p.error(f"--budget absolute for {args.model} (images: no agreement to keep) needs --max-error")
    h, w = args.size
    module, variables, preprocess = models.load(args.model)
    clip = preprocess(jnp.asarray(read_clip(args.video, start=args.start, max_frames=args.frames, size=(h, w))))[
        :, None
    ]
    level = float(jnp.min(tune.input_level(preprocess)))
    print(f"one 8-bit level of the input: {level:.4g} in the model's units (input thresholds are levels x this)")
    if args.budget == "noise":
        noise = args.noise_levels * tune.input_level(preprocess)
        budget = tune.noise_floor_budget(module.apply, clip, variables, noise=noise, metric=metric)
        print(f"budget: what dense keeps under +-{args.noise_levels:g} levels of input noise: {budget}")
    elif metric is not tune.image_metric:
        budget = tune.Budget(args.min_top1, args.max_error)
    else:
        budget = tune.Budget(None, args.max_error)
    result = tune.tune_thresholds(
        module.apply,
        clip,
        variables,
        budget=budget,
        metric=metric,
        candidates=candidates,
        input_candidates=[v * level for v in input_levels],
        verbose=True,
    )
    config = result.config
    if args.crossover:
        config = _with_crossover(module.apply, variables, clip[0], config, args.dense_tails)
    os.makedirs(args.out, exist_ok=True)
    tune.save_thresholds(os.path.join(args.out, "thresholds.json"), config)
    tune.plot_tradeoff(os.path.join(args.out, "tradeoff.png"), result)
    with open(os.path.join(args.out, "tradeoff.txt"), "w") as f:
        f.write(result.table() + "\n")
    print(result.table())
    print(f"wrote {args.out}/thresholds.json, tradeoff.png, tradeoff.txt")
    return 0
