"""Test harness: synthetic videos, and networks written once, run three ways.

A test network is a function ``net(ctx, params, x)`` that calls layers on a
context. ``DenseCtx`` runs plain ``jax.lax`` / ``jax.numpy`` at HIGHEST
precision (the oracle, independent of deltajax.ops); ``InitCtx`` runs the
first frame through deltajax.ops and collects the states; ``StepCtx`` runs a
delta frame, consuming and renewing the states in the same order.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deltajax import ops

HIGHEST = lax.Precision.HIGHEST


def moving_blobs(frames: int, n: int, h: int, w: int, c: int, seed: int = 0, blob: int = 3) -> np.ndarray:
    """A ``[T, N, H, W, C]`` float32 video: static texture plus small moving squares.

    Each stream has its own texture and blob path, so masks differ per stream.
    """
    rng = np.random.default_rng(seed)
    background = rng.uniform(-1, 1, (n, h, w, c)).astype(np.float32)
    video = np.repeat(background[None], frames, axis=0)
    colours = rng.uniform(-2, 2, (n, 2, c)).astype(np.float32)
    for t in range(frames):
        for s in range(n):
            for k in range(2):
                y = (3 * t + 5 * s + 7 * k) % max(h - blob, 1)
                x = (2 * t + 3 * s + 11 * k) % max(w - blob, 1)
                video[t, s, y : y + blob, x : x + blob] += colours[s, k]
    return video


def rel_error(got, want) -> float:
    """max |got - want| / max |want| (NaN counts as infinite)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _act(name):
    return ops.Activation(name)


class DenseCtx:
    """The oracle: plain lax/jnp, precision HIGHEST."""

    def conv(self, x, w, b=None, strides=1, padding="SAME", dilation=1, groups=1, transpose=False):
        s = (strides, strides) if isinstance(strides, int) else strides
        d = (dilation, dilation) if isinstance(dilation, int) else dilation
        if transpose:
            y = lax.conv_transpose(
                x, w, s, padding, rhs_dilation=d, dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST
            )
        else:
            y = lax.conv_general_dilated(
                x,
                w,
                s,
                padding,
                rhs_dilation=d,
                feature_group_count=groups,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                precision=HIGHEST,
            )
        return y if b is None else y + b[None, None, None, :]

    def bn(self, x, p):
        c = lambda v: v[None, None, None, :]  # noqa: E731
        return (x - c(p["mean"])) / jnp.sqrt(c(p["var"]) + 1e-5) * c(p["scale"]) + c(p["offset"])

    def act(self, x, name, truncation=None):
        return _act(name)(x)

    def add(self, x, y, act=None, truncation=None):
        return x + y if act is None else _act(act)(x + y)

    def concat(self, xs):
        return jnp.concatenate(xs, -1)

    def multiply(self, x, y):
        return x * y

    def maximum(self, x, y):
        return jnp.maximum(x, y)

    def max_pool(self, x, window, strides=None, padding="VALID"):
        s = window if strides is None else strides
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1), (1, s, s, 1), padding)

    def avg_pool(self, x, window, strides=None, padding="VALID"):
        s = window if strides is None else strides
        return lax.reduce_window(x, 0.0, lax.add, (1, window, window, 1), (1, s, s, 1), padding) / window**2

    def upsample(self, x, factor, method):
        n, h, w, c = x.shape
        if method == "nearest":
            return jnp.repeat(jnp.repeat(x, factor, 1), factor, 2)
        return jax.image.resize(x, (n, h * factor, w * factor, c), "bilinear", antialias=False)

    def global_pool(self, x):
        return jnp.mean(x, axis=(1, 2))

    def sparsify_vector(self, v, threshold=0.0):
        return v

    def dense(self, x, w, b=None):
        y = jnp.matmul(x, w, precision=HIGHEST)
        return y if b is None else y + b[None, :]


class _OpsCtx:
    """Layers through deltajax.ops; stateless ones work on dense arrays and Deltas alike."""

    def __init__(self, thresholds: float = 0.0):
        self.t = thresholds

    def conv(self, x, w, b=None, strides=1, padding="SAME", dilation=1, groups=1, transpose=False):
        f = ops.conv_transpose if transpose else ops.conv
        kw = {} if transpose else {"groups": groups}
        return f(x, w, b, strides=strides, padding=padding, dilation=dilation, **kw)

    def bn(self, x, p):
        return ops.batch_norm(x, p["scale"], p["offset"], p["mean"], p["var"], 1e-5)

    def concat(self, xs):
        return ops.concat(xs)

    def avg_pool(self, x, window, strides=None, padding="VALID"):
        return ops.avg_pool(x, window, strides, padding)

    def upsample(self, x, factor, method):
        return ops.upsample(x, factor, method)

    def dense(self, x, w, b=None):
        return ops.dense(x, w, b)

    def trunc(self, truncation):
        return truncation if truncation is not None else ops.Truncation("max", self.t)


class InitCtx(_OpsCtx):
    """First frame: dense through ops, states appended in call order."""

    def __init__(self, thresholds=0.0):
        super().__init__(thresholds)
        self.states = []

    def _keep(self, out_state):
        out, state = out_state
        self.states.append(state)
        return out

    def act(self, x, name, truncation=None):
        return self._keep(ops.activation_init(x, _act(name)))

    def add(self, x, y, act=None, truncation=None):
        return ops.add(x, y) if act is None else self._keep(ops.add_activation_init(x, y, _act(act)))

    def multiply(self, x, y):
        return self._keep(ops.multiply_init(x, y))

    def maximum(self, x, y):
        return self._keep(ops.maximum_init(x, y))

    def max_pool(self, x, window, strides=None, padding="VALID"):
        return self._keep(ops.max_pool_init(x, window, strides, padding))

    def global_pool(self, x):
        return self._keep(ops.global_avg_pool_init(x))

    def sparsify_vector(self, v, threshold=0.0):
        return self._keep(ops.sparsify_init(v))


class StepCtx(_OpsCtx):
    """A delta frame: consumes the states in the order InitCtx made them."""

    def __init__(self, states, thresholds=0.0):
        super().__init__(thresholds)
        self.states_in = list(states)
        self.states = []

    def _step(self, fn, *args):
        out, state = fn(self.states_in[len(self.states)], *args)
        self.states.append(state)
        return out

    def act(self, x, name, truncation=None):
        return self._step(ops.activation, x, _act(name), self.trunc(truncation))

    def add(self, x, y, act=None, truncation=None):
        if act is None:
            return ops.add(x, y)
        return self._step(ops.add_activation, x, y, _act(act), self.trunc(truncation))

    def multiply(self, x, y):
        return self._step(ops.multiply, x, y)

    def maximum(self, x, y):
        return self._step(ops.maximum, x, y)

    def max_pool(self, x, window, strides=None, padding="VALID"):
        return self._step(ops.max_pool, x, window, strides, padding)

    def global_pool(self, x):
        return self._step(ops.global_avg_pool, x)

    def sparsify_vector(self, v, threshold=0.0):
        return self._step(ops.sparsify, v, ops.SparsifyConfig(threshold))


def make_stream(net, params, *, threshold=0.0, poison=False):
    """Returns ``(init, step)`` running ``net`` as a delta network with sparsify/densify at the ends.

    ``init(x0) -> (y0, state)``; ``step(state, x) -> (y, state, masks)`` where
    ``masks`` is the input mask. ``poison`` replaces inactive input values
    with NaN (delta-semantics.md property 3).
    """

    def init(x0):
        ctx = InitCtx(threshold)
        x, s_in = ops.sparsify_init(x0)
        y = net(ctx, params, x)
        y, s_out = ops.densify_init(y) if y.ndim == 4 else (y, None)
        return y, (s_in, tuple(ctx.states), s_out)

    def step(state, x):
        s_in, states, s_out = state
        d, s_in = ops.sparsify(s_in, x, ops.SparsifyConfig(threshold))
        if poison:
            d = ops.Delta(jnp.where(d.mask[..., None], d.values, jnp.nan), d.mask)
        ctx = StepCtx(states, threshold)
        y = net(ctx, params, d)
        if isinstance(y, ops.Delta):
            y, s_out = ops.densify(s_out, y)
        return y, (s_in, tuple(ctx.states), s_out), d.mask

    return init, step


def run_video(net, params, video, **kw):
    """Runs ``net`` over ``[T, N, H, W, C]`` in one jit (lax.scan); returns outputs ``[T, ...]`` and masks."""
    init, step = make_stream(net, params, **kw)

    @jax.jit
    def go(video):
        y0, state = init(video[0])

        def body(state, x):
            y, state, mask = step(state, x)
            return state, (y, mask)

        _, (ys, masks) = lax.scan(body, state, video[1:])
        return jnp.concatenate([y0[None], ys]), masks

    return go(jnp.asarray(video))


def run_dense(net, params, video):
    """The oracle over every frame."""
    return jax.jit(jax.vmap(lambda x: net(DenseCtx(), params, x)))(jnp.asarray(video))
