"""Error over time: a delta model against dense of the same precision, frame by frame, over a long clip.

The clip is played forward and back (a ping-pong of its frames, so thousands of frames need only a few hundred
decoded) through one ``lax.scan`` for the delta stepper (threshold 0, or with ``--thresholds shipped`` the
thresholds tuned for the model at that frame size; no adaptive keyframes: every frame a delta step but the state's
refresh keyframes, ``DeltaConfig.refresh_every``: the library's default, or ``--refresh-every``; with
``--rolling-refresh P`` each step also recomputes a band of every layer, ``DeltaConfig.rolling_refresh``) and through
``lax.map`` over the distinct frames for dense (stateless: each distinct frame once). Per precision the row
gives the relative logit error ``||delta - dense|| / ||dense||`` over the first 10 % of frames, the last 10 %,
all of them and its max, the top-1 agreement, and as the noise floor the error of dense in that precision
against dense float32 (HIGHEST) on the same frames.

    python -m benchmarks.soak --preset cpu --json soak.json --markdown soak.md --png soak.png

With ``--max-growth G`` it exits with status 1 when a precision's error grew more than ``G`` times (the last 10 %
of frames' mean against the first 10 %'s), after writing its outputs; ``scripts/gpu_check.sh`` passes 1.2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
import time

import numpy as np

# name: (dtype, matmul precision of its convolutions)
PRECISIONS = {"f32_highest": ("float32", "highest"), "tf32": ("float32", "default"), "bf16": ("bfloat16", "default")}
# Dense runs this many frames per call (a batch of independent frames: the same per-frame values up to the
# rounding of another convolution algorithm, at a fraction of the launches of frame-by-frame dense).
DENSE_BATCH = 50


@dataclasses.dataclass(frozen=True)
class Preset:
    """What a soak runs: model, precisions, frames, the distinct frames ping-ponged, the frame size
    ``(height, width)``, the state's refresh periods (keyframes, rolling) and the thresholds ("exact": all 0;
    "shipped": those tuned for the model at that size, ``deltajax.tune.shipped_thresholds``)."""

    model: str
    precisions: tuple[str, ...]
    frames: int
    distinct: int
    size: tuple[int, int]
    refresh_every: int | None | str = "default"  # DeltaConfig.refresh_every ("default": the library's)
    thresholds: str = "exact"
    rolling_refresh: int | None = None  # DeltaConfig.rolling_refresh


PRESETS = {
    "cpu": Preset("efficientnet_lite0", ("f32_highest", "bf16"), 1000, 100, (224, 128)),
    # 384x216: at 768x432 each precision took 135 s of the GPU machine's 10 minutes per command (H200)
    "gpu": Preset("efficientnet_lite0", ("tf32", "bf16"), 10_000, 300, (216, 384)),
}


def ping_pong(distinct: int, frames: int) -> np.ndarray:
    """``[frames]`` indices into ``distinct`` frames played forward and back: 0 1 .. d-1 d-2 .. 1 0 1 .."""
    period = np.concatenate([np.arange(distinct), np.arange(distinct - 2, 0, -1)]) if distinct > 1 else np.zeros(1)
    return np.resize(period.astype(np.int32), frames)


def soak_errors(
    apply,
    variables,
    base,
    order,
    precision: str,
    dense_reference=None,
    refresh_every: int | None | str = "default",
    thresholds=None,
    rolling_refresh: int | None = None,
) -> dict:
    """Per-frame errors of one precision.

    Args:
      apply: ``apply(variables, frame [N, H, W, C]) -> logits [N, K]`` (a Flax ``module.apply``).
      variables: the model's variables in the precision's dtype.
      base: ``[D, N, H, W, C]`` distinct frames in the precision's dtype.
      order: ``[T]`` int32 indices into ``base``: the frames played.
      precision: a key of ``PRECISIONS``.
      dense_reference: ``[T, N, K]`` dense float32 HIGHEST logits (the noise floor's reference), or None.
      refresh_every: ``DeltaConfig.refresh_every`` ("default": the library's; None: every frame after the first a
        delta step).
      thresholds: a ``DeltaConfig`` whose thresholds the stepper takes (None: all 0, exact).
      rolling_refresh: ``DeltaConfig.rolling_refresh`` (None: off).

    Returns:
      ``{"delta": [T], "floor": [T] or None, "top1": float, "refresh_every": int or None, "rolling_refresh": int
      or None}``: the relative logit error of delta against dense of this precision per frame (mean over
      streams), of that dense against ``dense_reference``, the top-1 agreement of delta with dense, and the
      refresh periods the stepper ran with.
    """
    import jax
    import jax.numpy as jnp

    import deltajax

    order = jnp.asarray(order)
    config = dataclasses.replace(
        thresholds or deltajax.DeltaConfig(), keyframe_above=None, rolling_refresh=rolling_refresh
    )
    if refresh_every != "default":
        config = dataclasses.replace(config, refresh_every=refresh_every)
    stepper = deltajax.delta(apply, config=config)

    with _matmul_precision(PRECISIONS[precision][1]):

        @jax.jit
        def run(variables, base, order):
            out0, state = stepper.init(variables, base[order[0]])

            def body(state, i):
                out, state = stepper(state, variables, base[i])
                return state, out

            _, outs = jax.lax.scan(body, state, order[1:])
            dense = dense_frames(apply, variables, base, order)
            return jnp.concatenate([out0[None], outs]), dense

        outs, dense = run(variables, base, order)
    agreement, err = deltajax.stats.compare_outputs(outs, dense)
    floor = None if dense_reference is None else deltajax.stats.compare_outputs(dense, dense_reference)[1].mean(1)
    return {
        "delta": err.mean(1),
        "floor": floor,
        "top1": agreement,
        "refresh_every": config.refresh_every,
        "rolling_refresh": config.rolling_refresh,
    }


def dense_frames(apply, variables, base, order):
    """``[T, N, K]``: ``apply(variables, base[i])`` for each ``i`` of ``order``. Dense is stateless, so it runs once
    per distinct frame (``DENSE_BATCH`` frames per call), and the played order gathers from those outputs."""
    import jax

    return jax.lax.map(lambda frame: apply(variables, frame), base, batch_size=DENSE_BATCH)[order]


@contextlib.contextmanager
def _matmul_precision(name: str):
    import jax

    with jax.default_matmul_precision(name):
        yield


def summarise(precision: str, errors: dict) -> dict:
    """A row: first / last 10 % means, mean, max and growth of the delta error, top-1 agreement, and the noise
    floor."""
    err = np.asarray(errors["delta"], np.float64)[1:]  # frame 0 is dense in both
    tenth = max(len(err) // 10, 1)
    first, last = float(err[:tenth].mean()), float(err[-tenth:].mean())
    row = {
        "precision": precision,
        "frames": len(err) + 1,
        "refresh_every": errors["refresh_every"],
        "rolling_refresh": errors["rolling_refresh"],
        "rel_error_first_10pct": first,
        "rel_error_last_10pct": last,
        "rel_error_mean": float(err.mean()),
        "rel_error_max": float(err.max()),
        "growth": last / max(first, 1e-30),
        "top1_agreement": errors["top1"],
    }
    if errors["floor"] is not None:
        floor = np.asarray(errors["floor"], np.float64)[1:]
        row.update(noise_floor_mean=float(floor.mean()), noise_floor_max=float(floor.max()))
    return row


def grown(rows: list[dict], max_growth: float) -> list[str]:
    """A line for each row whose error grew more than ``max_growth`` times, naming its precision and refresh."""
    return [
        f"soak: {r['precision']} ({refresh_label(r)}): the error grew {r['growth']:.2f}x over {r['frames']} frames "
        f"({r['rel_error_first_10pct']:.3g} -> {r['rel_error_last_10pct']:.3g}), more than --max-growth {max_growth}"
        for r in rows
        if r["growth"] > max_growth
    ]


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| precision | frames | thresholds | refresh | rel. logit error, first 10 % | last 10 % | mean | max "
        "| growth | top-1 agreement | dense vs float32, mean / max |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        floor = f"{r['noise_floor_mean']:.2e} / {r['noise_floor_max']:.2e}" if "noise_floor_mean" in r else "-"
        lines.append(
            f"| {r['precision']} | {r['frames']} | {r.get('thresholds', 'exact')} | {refresh_label(r)} "
            f"| {r['rel_error_first_10pct']:.2e} "
            f"| {r['rel_error_last_10pct']:.2e} | {r['rel_error_mean']:.2e} "
            f"| {r['rel_error_max']:.2e} | {r['growth']:.2f}x | {100 * r['top1_agreement']:.1f} % | {floor} |"
        )
    return "\n".join(lines) + "\n"


def refresh_label(row: dict) -> str:
    """How a row's state was refreshed: 'keyframes every 1000', 'rolling, period 64', both, or 'never'."""
    parts = []
    if row.get("rolling_refresh"):
        parts.append(f"rolling, period {row['rolling_refresh']}")
    if row["refresh_every"]:
        parts.append(f"keyframes every {row['refresh_every']}")
    return " + ".join(parts) or "never"


def plot(curves: dict[str, np.ndarray], path: str, title: str) -> None:
    """The per-frame error curves (log scale) as a PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve)), np.maximum(curve[1:], 1e-12), label=name, linewidth=0.6)
    ax.set(xlabel="frame", ylabel="rel. logit error vs dense", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(preset: Preset, video: str) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Every precision of ``preset`` on ``video``: the rows and the curves (delta and noise floor per precision)."""
    import jax
    import jax.numpy as jnp

    from deltajax import DeltaConfig
    from deltajax.benchmark import load_clip
    from deltajax.tune import shipped_thresholds

    thresholds = None
    if preset.thresholds == "shipped":
        thresholds = shipped_thresholds(preset.model, preset.size, video)
        if thresholds == DeltaConfig():  # nothing tuned for this model and size
            h, w = preset.size
            raise ValueError(
                f"soak: argument --thresholds shipped: no thresholds tuned for {preset.model} at {h}x{w} in "
                "deltajax/data/; pick a --size they were tuned at, or tune them (deltajax tune)"
            )
    module, variables, base = load_clip(preset.model, video, 1, preset.size, preset.distinct, jnp.float32)
    order = ping_pong(base.shape[0], preset.frames)
    with _matmul_precision("highest"):
        reference = jax.jit(functools.partial(dense_frames, module.apply))(variables, base, order)
    rows, curves = [], {}
    for precision in preset.precisions:
        start = time.perf_counter()
        dtype = jnp.dtype(PRECISIONS[precision][0])
        errors = soak_errors(
            module.apply,
            cast_tree(variables, dtype),
            cast_tree(base, dtype),
            order,
            precision,
            None if precision == "f32_highest" else reference,  # that dense is the reference: no floor
            preset.refresh_every,
            thresholds,
            preset.rolling_refresh,
        )
        rows.append({**summarise(precision, errors), "thresholds": preset.thresholds})
        print(f"{precision}: {preset.frames} frames in {time.perf_counter() - start:.0f} s", flush=True)
        curves[f"{precision} delta vs dense"] = np.asarray(errors["delta"])
        if errors["floor"] is not None:
            curves[f"{precision} dense vs float32 (floor)"] = np.asarray(errors["floor"])
    return rows, curves


def cast_tree(tree, dtype):
    """Every array of a pytree in ``dtype``."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def _refresh_period(text: str, default: bool = True) -> int | None | str:
    """A refresh period option's value: 'never' -> None, 'default' as it is (where ``default``), else a positive
    int."""
    from deltajax._cli import positive_int

    if text == "never" or (default and text == "default"):
        return None if text == "never" else text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive int or 'never', got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    from deltajax._cli import frame_size, positive_float

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--frames", type=int, help="frames played (default: the preset's)")
    p.add_argument("--video", help="clip (default: the bundled person clip)")
    p.add_argument("--size", type=frame_size, help="frame size HxW (default: the preset's)")
    p.add_argument("--json", help="write the rows and curves here")
    p.add_argument("--markdown", help="write the table here")
    p.add_argument("--png", help="write the error curves here (needs matplotlib)")
    p.add_argument(
        "--refresh-every",
        type=_refresh_period,
        default="default",
        help="DeltaConfig.refresh_every: a positive int, or 'never' (default: the library's)",
    )
    p.add_argument(
        "--rolling-refresh",
        type=functools.partial(_refresh_period, default=False),
        default=None,
        help="DeltaConfig.rolling_refresh: a positive int, or 'never' (default: never)",
    )
    p.add_argument(
        "--thresholds",
        choices=("exact", "shipped"),
        default="exact",
        help="all 0 (default), or those tuned for the model at the preset's size (deltajax/data/)",
    )
    p.add_argument(
        "--max-growth",
        type=positive_float,
        help="exit with status 1 when a precision's last-10 %% mean error exceeds this multiple of its first-10 %%",
    )
    args = p.parse_args(argv)
    from deltajax.video import bundled_clip

    preset = PRESETS[args.preset]
    if args.frames is not None:
        preset = dataclasses.replace(preset, frames=args.frames)
    if args.size is not None:
        preset = dataclasses.replace(preset, size=args.size)
    preset = dataclasses.replace(
        preset, refresh_every=args.refresh_every, thresholds=args.thresholds, rolling_refresh=args.rolling_refresh
    )
    video = args.video or bundled_clip("people")
    rows, curves = run(preset, video)
    table = markdown(rows)
    print(table)
    if args.json:
        import jax

        device = jax.devices()[0]
        meta = {
            "device": f"{device.device_kind} ({device.platform})",
            "preset": dataclasses.asdict(preset),
            "video": os.path.basename(video),
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "curves": {k: v.tolist() for k, v in curves.items()}}, f)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    if args.png:
        plot(curves, args.png, f"{preset.model}, {preset.size[1]}x{preset.size[0]}, ping-pong of {preset.distinct}")
    failures = grown(rows, args.max_growth) if args.max_growth is not None else []
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
