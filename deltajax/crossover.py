"""Where a delta model stops paying: the input activity above which its delta step costs more than its dense frame.

``measure(fn, *args)`` times, on the default device, the dense frame (``fn(*args)``, XLA) and a delta step
(threshold 0, every frame a delta step) between the frame and a copy with round blobs changed over a fraction of
its pixels, for fractions from 0 to 1. The crossover is the input tile activity
(``deltajax.transform._frames.tile_activity``: the fraction of 16x16 tiles with a changed pixel, what
``DeltaConfig.keyframe_above`` is compared with) where the step's time reaches the dense frame's, interpolated
between the measured points; ``keyframe_above(curve)`` is the setting that makes a frame busier than that run
densely on this platform and leaves the others at "auto" (``deltajax tune --crossover`` stores it).

Example:
  >>> curve = deltajax.crossover.measure(model.apply, variables, frame)
  >>> config = DeltaConfig(keyframe_above=deltajax.crossover.keyframe_above(curve))
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

import jax
import jax.numpy as jnp

from deltajax._native import default_platform
from deltajax.timing import blob_mask, first_scalar, stepped_time
from deltajax.transform._frames import tile_activity
from deltajax.transform.config import PLATFORMS, DeltaConfig
from deltajax.transform.stepper import delta

FRACTIONS = (0.0, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)  # of the pixels changed
STEPS = 16  # delta steps per timed program


@dataclasses.dataclass(frozen=True)
class Curve:
    """A delta step's cost against the dense frame's, over the changed fraction of the frame's pixels.

    Attributes:
      dense_s: seconds of one dense frame.
      fractions: the changed fraction of the pixels at each point.
      tile_activity: the input tile activity of that change (what ``keyframe_above`` is compared with).
      step_s: seconds of one delta step with that change.
    """

    dense_s: float
    fractions: tuple[float, ...]
    tile_activity: tuple[float, ...]
    step_s: tuple[float, ...]

    @property
    def ratios(self) -> tuple[float, ...]:
        """Delta step / dense frame at each point."""
        return tuple(s / self.dense_s for s in self.step_s)

    @property
    def crossover(self) -> float | None:
        """The tile activity where the delta step reaches the dense frame (None: never)."""
        return interpolate(self.tile_activity, self.ratios)


def interpolate(activities, ratios) -> float | None:
    """The activity where ``ratios`` (delta time / dense time, increasing with the activity) first reaches 1,
    linear between the points; 0 if the first point already does, None if none does."""
    for i in range(1, len(ratios)):
        (a0, r0), (a1, r1) = (activities[i - 1], ratios[i - 1]), (activities[i], ratios[i])
        if r0 < 1 <= r1:
            return a0 + (1 - r0) * (a1 - a0) / (r1 - r0)
    return 0.0 if ratios[0] >= 1 else None


def changed_frame(frame: jax.Array, fraction: float, seed: int = 0) -> tuple[jax.Array, float]:
    """``frame`` ``[N, H, W, C]`` with round blobs covering ``fraction`` of the pixels changed (noise added), and
    the change's tile activity."""
    n, h, w, _ = frame.shape
    mask = jnp.asarray(blob_mask(n, h, w, fraction, seed))
    noise = jax.random.normal(jax.random.key(seed), frame.shape, jnp.float32) * 0.25
    return jnp.where(mask[..., None], frame + noise.astype(frame.dtype), frame), float(tile_activity(mask))


@functools.lru_cache(maxsize=16)
def dense_round_trip(fn, frame_pos: int):
    """``(token, a, b, *args) -> (out, token)``: ``fn`` on frame ``b``, then on ``a`` (``args`` with the frame at
    ``frame_pos``), the dense counterpart of ``round_trip``, timed the same way (in a scan, two frames a step).
    Each frame gets ``0 * token`` added, a scalar of the previous output, so that no frame is loop-invariant (XLA
    would hoist it out of the loop); what depends on the parameters alone may be hoisted, as in a video loop."""

    def step(token, a, b, *args):
        def run(frame, token):
            frame = frame + (token * 0).astype(frame.dtype)
            out = fn(*args[:frame_pos], frame, *args[frame_pos + 1 :])
            return out, first_scalar(out)

        _, token = run(b, token)
        return run(a, token)

    return step


@functools.lru_cache(maxsize=16)
def round_trip(stepper, frame_pos: int):
    """``(state, a, b, *args) -> (out, state)``: two delta steps, to frame ``b`` and back to ``a`` (``args`` with
    the frame at ``frame_pos``), so that a program repeating it changes the same pixels every step. Cached: one
    function (one compiled program in ``deltajax.timing``) per stepper."""

    def step(state, a, b, *args):
        def at(frame):
            return (*args[:frame_pos], frame, *args[frame_pos + 1 :])

        _, state = stepper(state, *at(b))
        return stepper(state, *at(a))

    return step


def stepper_for(fn, frame_argnum: int = -1, config: DeltaConfig = DeltaConfig()):
    """The stepper ``measure`` times: ``config``'s thresholds, every changed frame a delta step (no crossover, no
    refresh keyframes)."""
    return delta(
        fn, frame_argnum=frame_argnum, config=dataclasses.replace(config, keyframe_above=None, refresh_every=None)
    )


def measure(
    fn, *args, frame_argnum: int = -1, config: DeltaConfig = DeltaConfig(), fractions=FRACTIONS, seed: int = 0
) -> Curve:
    """The delta step of ``fn`` (``config``'s thresholds; 0: exact) against its dense frame on arguments ``args``
    (the frame ``[N, H, W, C]`` at ``frame_argnum``), at each changed fraction of ``fractions``, on the default
    device (compiles and runs the model; seconds on a GPU, a minute or more on a CPU at 768x432)."""
    return measure_stepper(stepper_for(fn, frame_argnum, config), *args, fractions=fractions, seed=seed)


def measure_as_configured(
    fn,
    *args,
    frame_argnum: int = -1,
    config: DeltaConfig = DeltaConfig(),
    fractions=FRACTIONS,
    seed: int = 0,
    dense_s: float | None = None,
) -> Curve:
    """Like ``measure``, but each changed frame runs as ``config`` has it on the default device's platform: one
    busier than its ``keyframe_above`` (default "auto": the platform's measured crossover) runs the plain model,
    the others a delta step. The ratios are then what a clip changing that much costs per frame against dense XLA:
    at most about 1 at every fraction where the crossover is right (a dense frame plus the check that decides).
    ``dense_s``: the dense frame's seconds, already measured (``measure``'s ``Curve.dense_s``), not timed again."""
    stepper = delta(fn, frame_argnum=frame_argnum, config=config).on_platform(default_platform())
    return measure_stepper(stepper, *args, fractions=fractions, seed=seed, dense_s=dense_s)


def measure_stepper(stepper, *args, fractions=FRACTIONS, seed: int = 0, dense_s: float | None = None) -> Curve:
    """``measure`` of a stepper (``stepper_for``'s, or one with its own settings): its frames against its
    function's dense frame (``dense_s`` where given), both timed the same way: ``STEPS`` round trips between the
    frame and the changed one in one compiled scan (``dense_round_trip``, ``round_trip``), a step's time half a
    round trip's. The delta program is ``deltajax.timing.stepped_program(round_trip(stepper, frame position),
    STEPS)``, compiled once (a caller that traces it finds it compiled)."""
    pos = stepper._frame("deltajax.crossover.measure", args)[0]
    if dense_s is not None and not (isinstance(dense_s, numbers.Real) and 0 < dense_s < math.inf):
        raise ValueError(
            "deltajax.crossover.measure: argument 'dense_s' must be a dense frame's seconds, a positive finite "
            f"number (Curve.dense_s), or None to time it, got {dense_s!r}"
        )
    frame = args[pos]
    step = round_trip(stepper, pos)
    init = jax.jit(stepper.init)
    others = [changed_frame(frame, p, seed) for p in fractions]
    if dense_s is None:  # rolled, not unrolled: 16 copies of a model took 27 s to compile on a 2-core CPU
        token = jnp.zeros((), jnp.float32)
        dense_s = stepped_time(dense_round_trip(stepper.fn, pos), token, frame, others[-1][0], *args, reps=STEPS) / 2
    step_s, tiles = [], []
    for other, tiles_p in others:
        _, state = init(*args)
        step_s.append(stepped_time(step, state, frame, other, *args, reps=STEPS) / 2)
        tiles.append(tiles_p)
    return Curve(dense_s, tuple(fractions), tuple(tiles), tuple(step_s))


def keyframe_above(curve: Curve, setting="auto"):
    """``DeltaConfig.keyframe_above`` with the measured crossover on the default device's platform ('cpu',
    'cuda', ...: None where the delta step never costs a dense frame), and ``setting`` (a fraction, "auto", None
    or a per-platform mapping) on the others."""
    platform = default_platform()
    if isinstance(setting, tuple | dict):
        others = dict(setting)
    elif setting == "auto":
        others = {}
    else:
        others = {p: setting for p in PLATFORMS}
    return {**others, platform: curve.crossover}
