"""How a frame runs: skipped (no input change), as a delta step, or densely (a keyframe, or the plain model).

The mode comes from the input's tile activity (computed by the input sparsify,
which runs first), the count of non-finite input values and the stream's
restart flag. Each non-skip mode's work is a ``run_if`` (a while loop of zero
or one trip), so that a skipped frame runs nothing and no mode copies the
layers' state; where only skip and dense are possible (a crossover of 0), one
``lax.cond`` over the output decides instead (``per_platform``), and over many
frames at once, ``skipped_or_plain`` decides the whole run. There is never a
per-layer conditional: on a GPU each costs a device-to-host round trip.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.xla_metadata import set_xla_metadata

from deltajax import _native
from deltajax.backend import reference_forced

SKIP, DELTA, KEYFRAME, DENSE = 0, 1, 2, 3

# Input tile activity (tile_activity) above which a delta step costs more than a dense frame, per backend, when
# DeltaConfig.keyframe_above is "auto" (`python -m benchmarks.crossover` measures it):
# - cpu (native kernels, 2-core VM, EfficientNet-Lite0 / MobileNetV2 at 768x432): the delta step stays faster
#   than XLA:CPU's dense frame with every input pixel active (its depthwise convolutions are slow), so never;
# - cuda: on an H200 a delta step of EfficientNet-Lite0 at 768x432 costs at least its no-change step (0.68 ms:
#   every layer's kernels launch) and a dense bf16 frame 0.52 ms with the best XLA flags, so a changed frame
#   never pays as a delta step yet: it runs dense, and only unchanged frames are skipped;
# - the pure-JAX reference (no native kernels): a delta step with every pixel active costs about 1.6 dense frames.
AUTO_CROSSOVER = {"cpu": 1.0, "cuda": 0.0, "reference": 0.5}
TARGET_OF_DELTA_STEP = "deltajax_sparsify"  # a platform with native kernels registers this one


def _measured_platforms() -> list[str]:
    """Platforms of ``AUTO_CROSSOVER`` whose native kernels are loaded (none when the reference is forced)."""
    native = [] if reference_forced() else [p for p in _native.native_platforms() if p in AUTO_CROSSOVER]
    return [p for p in native if TARGET_OF_DELTA_STEP in _native.targets(p)]


NEVER = 1.0  # a crossover no activity exceeds: a platform mapped to None in DeltaConfig.keyframe_above


def _crossovers(setting) -> tuple[dict[str, float], float | None]:
    """``DeltaConfig.keyframe_above`` as ``(crossover per platform, crossover elsewhere)``: a number or None
    applies everywhere; "auto" gives the measured crossover of each platform with native kernels and the
    reference's elsewhere; a mapping (sorted pairs) overrides "auto" on the platforms it names."""
    if not (setting == "auto" or isinstance(setting, tuple)):
        return {}, setting
    values = {p: AUTO_CROSSOVER[p] for p in _measured_platforms()}
    if isinstance(setting, tuple):
        values.update({p: NEVER if v is None else float(v) for p, v in setting})
    return values, AUTO_CROSSOVER["reference"]


def crossover_on(setting, platform: str) -> float | None:
    """The crossover that ``DeltaConfig.keyframe_above`` sets on ``platform`` (a lax.platform_dependent name):
    a number, or None (never)."""
    values, default = _crossovers(setting)
    return values.get(platform, default)


def never_delta(setting) -> bool:
    """True when ``DeltaConfig.keyframe_above`` is a crossover of 0 on every platform: no frame runs as a delta
    step anywhere, so no mode reads the layers' state but the input's."""
    values, default = _crossovers(setting)
    return default == 0 and all(v == 0 for v in values.values())


def crossover(setting):
    """The crossover that ``DeltaConfig.keyframe_above`` sets on the platform the program runs on: None (never),
    a number, or a float32 scalar chosen per platform."""
    values, default = _crossovers(setting)
    if not values:
        return default
    branches = {p: (lambda v=v: jnp.float32(v)) for p, v in values.items()}
    return lax.platform_dependent(default=lambda: jnp.float32(default), **branches)


def per_platform(setting, general: Callable, dense_only: Callable):
    """``dense_only()`` in the program lowered for a platform whose crossover under ``setting``
    (``DeltaConfig.keyframe_above``) is 0 (every changed frame runs the plain dense model, so no mode needs the
    layers' state), ``general()`` in the others. Each platform compiles only its own branch: nothing is decided
    at run time."""
    values, default = _crossovers(setting)
    base, other = (dense_only, general) if default == 0 else (general, dense_only)
    moved = [p for p, v in values.items() if (v == 0) != (default == 0)]
    return lax.platform_dependent(default=base, **{p: other for p in moved}) if moved else base()


TILE = 16  # pixels per side of the tiles whose activity decides between a delta step and a dense frame


def tile_activity(mask: jax.Array, tile: int = TILE) -> jax.Array:
    """Fraction of ``tile`` x ``tile`` tiles of ``mask`` ``[N, H, W]`` holding an active pixel (float32 scalar;
    edge tiles are partial). A better predictor of a step's cost than the pixel fraction: scattered changes
    (noise) light up every tile, and every layer below them, where a moving object lights up only its own."""
    n, h, w = mask.shape
    padded = jnp.pad(mask, ((0, 0), (0, -h % tile), (0, -w % tile)))
    tiles = padded.reshape(n, padded.shape[1] // tile, tile, padded.shape[2] // tile, tile)
    return jnp.mean(jnp.any(tiles, axis=(2, 4)), dtype=jnp.float32)


def choose_mode(
    active: jax.Array, nonfinite: jax.Array, restart: jax.Array, forced: jax.Array, crossover, after_nonfinite=False
) -> jax.Array:
    """The frame's mode (int32 scalar).

    - DENSE: the plain dense model, no state written (the stream must restart): a frame holding non-finite
      values, or busier than ``crossover`` (a delta step would cost more).
    - KEYFRAME: dense, every layer's state rebuilt: forced, or the first changed frame after a restart.
    - SKIP: nothing changed (and the last frame was finite): the last output again.
    - DELTA: a delta step.

    Args:
      active: activity of the input's update (``tile_activity``, all streams): 0 when nothing changed.
      nonfinite: number of non-finite values in the frame.
      restart: the layers' state is stale (the last changed frame ran DENSE).
      forced: a keyframe was asked for (``keyframe_every``).
      crossover: activity above which the frame runs densely (None: never).
      after_nonfinite: the last frame held non-finite values (its output is dense's, non-finite where dense's
        is): this frame counts as changed whatever its activity.
    """
    plain = nonfinite > 0
    if crossover is not None:
        plain = plain | (active > crossover)
    changed = jnp.where(restart, KEYFRAME, DELTA)
    moved = (active > 0) | after_nonfinite
    mode = jnp.where(forced, KEYFRAME, jnp.where(plain, DENSE, jnp.where(moved, changed, SKIP)))
    return jnp.where(forced & (nonfinite > 0), DENSE, mode).astype(jnp.int32)


def skip_or_dense(
    active: jax.Array, nonfinite: jax.Array, restart: jax.Array, forced: jax.Array, after_nonfinite=False
) -> jax.Array:
    """The frame's mode where the crossover is 0 (int32 scalar): SKIP (no input change, no keyframe asked for) or
    DENSE (the plain model; a keyframe's rebuilt state would never be read). Arguments as for ``choose_mode``."""
    chosen = choose_mode(active, nonfinite, restart, forced, 0.0, after_nonfinite)
    return jnp.where(chosen == SKIP, SKIP, DENSE).astype(jnp.int32)


def input_reference(reference, frame: jax.Array, after_nonfinite: jax.Array):
    """The input's reference (``ops.SparsifyState``) to compare ``frame`` with: ``frame`` itself after a frame that
    held non-finite values (the native sparsify may have stored them: a NaN in the reference would hide every
    later change of its pixel; the frame runs densely in any case, ``choose_mode``), else ``reference``."""
    return reference._replace(ref=jnp.where(after_nonfinite, frame.astype(reference.ref.dtype), reference.ref))


def restarts(mode: jax.Array, restart: jax.Array) -> jax.Array:
    """The stream's restart flag after a frame of ``mode``: set by DENSE, kept by SKIP, cleared otherwise."""
    return (mode == DENSE) | (restart & (mode == SKIP))


def refreshed(mode: jax.Array, age: jax.Array, every: int | None) -> jax.Array:
    """``mode``, with DELTA turned into KEYFRAME once the state has taken ``every`` delta steps since it was built
    (``DeltaConfig.refresh_every``; None: never)."""
    if every is None:
        return mode
    return jnp.where((mode == DELTA) & (age >= every), KEYFRAME, mode)


def aged(mode: jax.Array, age: jax.Array) -> jax.Array:
    """Delta steps since the state was built, after a frame of ``mode``: reset by KEYFRAME, counted by DELTA."""
    return jnp.where(mode == KEYFRAME, 0, age + (mode == DELTA)).astype(jnp.int32)


def run_if(pred: jax.Array, fn: Callable, carry):
    """``fn(carry)`` if ``pred`` else ``carry`` (same pytree structure, shapes and dtypes).

    A while loop of zero or one trip rather than ``lax.cond``: XLA updates a loop's carry in place, where a
    conditional copies every array it passes through on the way in and again on the way out (for a delta
    model's layer state, hundreds of megabytes per frame at 768x432). ``fn`` must read the state it updates from
    ``carry``, not from a closure, or XLA keeps the old value alive and copies it.

    XLA's loop-invariant code motion is off for this loop: it would move the work that depends only on the
    parameters (on a GPU, the weight layout transposes of the dense convolutions: about 50 kernels for
    EfficientNet-Lite0) out of the loop, where it runs on every frame, also when ``pred`` is False.
    """

    def body(c):
        return jnp.bool_(False), fn(c[1])

    with set_xla_metadata(_xla_disable_loop_instr_hoisting="true"):
        return lax.while_loop(lambda c: c[0], body, (jnp.asarray(pred, jnp.bool_), carry))[1]


CHUNK = 8  # frames that skipped_or_plain decides at once in a run that mixes skipped and changed frames


def skipped_or_plain(plain: Callable, last, frames: jax.Array, modes: jax.Array, chunk: int = CHUNK):
    """The outputs ``[K, ...]`` of frames ``[K, ...]`` each SKIP (the output before it, ``last`` for the first) or
    DENSE (``plain(frame)``) by ``modes`` ``[K]``, where no frame runs as a delta step.

    One ``lax.switch`` decides the whole run: all skipped gives ``last`` ``K`` times; all changed, one ``lax.map``
    of ``plain`` (dense XLA's own loop); a run of both, chunks of ``chunk`` frames (the last padded with skipped
    ones), each decided the same way, a mixed chunk running its changed frames only (``changed_only``). On a GPU
    each decision and each trip of a loop whose length is not known is a device-to-host round trip (12-38 us on
    an H200): one for a clip whose frames all change or none, one more per chunk otherwise, and one per changed
    frame only inside a mixed chunk."""
    count = frames.shape[0]

    def decided(out, frames, modes, mixed: Callable):
        which = jnp.where(jnp.all(modes == SKIP), 0, jnp.where(jnp.all(modes == DENSE), 1, 2))
        return lax.switch(which, [lambda: _repeated(out, frames.shape[0]), lambda: lax.map(plain, frames), mixed])

    def chunked():
        pad = -count % chunk
        padded = jnp.pad(frames, ((0, pad),) + ((0, 0),) * (frames.ndim - 1))
        padded = padded.reshape(-1, chunk, *frames.shape[1:])
        padded_modes = jnp.pad(modes, (0, pad), constant_values=SKIP).reshape(-1, chunk)

        def body(out, xs):
            outs = decided(out, *xs, lambda: changed_only(plain, out, *xs))
            return jax.tree_util.tree_map(lambda a: a[-1], outs), outs

        outs = lax.scan(body, last, (padded, padded_modes))[1]
        return jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:])[:count], outs)

    return decided(last, frames, modes, chunked)


def changed_only(plain: Callable, last, frames: jax.Array, modes: jax.Array):
    """``skipped_or_plain``'s outputs computed by a loop over the DENSE frames alone, in order (one trip each: on a
    GPU a round trip each, and one to leave, where a ``lax.cond`` per frame would read ``K``); each SKIP frame
    then takes the output of the last DENSE frame before it (``last`` where there is none)."""
    dense = modes == DENSE
    order = jnp.argsort(~dense, stable=True)  # the DENSE frames first, in order
    runs = jnp.sum(dense, dtype=jnp.int32)

    def body(carry):
        i, outs = carry
        out = plain(lax.dynamic_index_in_dim(frames, order[i], keepdims=False))
        return i + 1, jax.tree_util.tree_map(lambda o, v: o.at[i].set(v), outs, out)

    computed = lax.while_loop(lambda c: c[0] < runs, body, (jnp.int32(0), _repeated(last, frames.shape[0])))[1]
    source = jnp.cumsum(dense, dtype=jnp.int32) - 1  # per frame, the last DENSE frame at or before it (-1: none)

    def pick(outs, before):
        got = outs[jnp.maximum(source, 0)]
        return jnp.where((source >= 0).reshape(-1, *([1] * before.ndim)), got, before[None])

    return jax.tree_util.tree_map(pick, computed, last)


def _repeated(out, n: int):
    """``out`` (a pytree) ``n`` times on a new leading axis."""
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), out)


def count_nonfinite(frame: jax.Array) -> jax.Array:
    """Number of NaN / Inf values in ``frame`` (int32 scalar)."""
    return jnp.sum(~jnp.isfinite(frame), dtype=jnp.int32)
