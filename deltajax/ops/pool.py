"""Pooling on deltas: max pool (stateful), average pool (linear), global average pool."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from deltajax.ops import _geometry as geo
from deltajax.ops._delta import STATE_DTYPE, Delta, check_delta, check_nhwc, check_state


class MaxPoolState(NamedTuple):
    """``acc``: ``[N, H, W, C]`` float32, the accumulated input."""

    acc: jax.Array


class GlobalPoolState(NamedTuple):
    """``acc``: ``[N, C]`` float32, the accumulated pooled vector."""

    acc: jax.Array


def _window_args(op: str, spatial, window, strides, padding):
    window = geo.pair(op, "window", window)
    strides = geo.pair(op, "strides", window if strides is None else strides)
    pads = geo.window_pads(op, spatial, window, strides, (1, 1), padding)
    return window, strides, pads


def _max_window(x, window, strides, pads):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0)))


def max_pool_init(x: jax.Array, window, strides=None, padding="VALID") -> tuple[jax.Array, MaxPoolState]:
    """First frame of a max pool over ``[N, H, W, C]`` (strides default to the window)."""
    check_nhwc("max_pool_init", "x", x)
    window, strides, pads = _window_args("max_pool_init", x.shape[1:3], window, strides, padding)
    acc = x.astype(STATE_DTYPE)
    return _max_window(acc, window, strides, pads).astype(x.dtype), MaxPoolState(acc)


def max_pool(state: MaxPoolState, x: Delta, window, strides=None, padding="VALID") -> tuple[Delta, MaxPoolState]:
    """``max(window(acc + d)) - max(window(acc))``; output mask by the receptive-field rule."""
    check_delta("max_pool", "x", x)
    check_state("max_pool", "state.acc", state.acc, x.shape, "max_pool_init")
    window, strides, pads = _window_args("max_pool", x.shape[1:3], window, strides, padding)
    new = state.acc + x.masked_values(STATE_DTYPE)
    out = _max_window(new, window, strides, pads) - _max_window(state.acc, window, strides, pads)
    mask = geo.receptive_field_mask(x.mask, window, strides, pads)
    return Delta(out.astype(x.dtype), mask), MaxPoolState(new)


def avg_pool(x: jax.Array | Delta, window, strides=None, padding="VALID", count_include_pad: bool = True):
    """Average pool of a dense ``[N, H, W, C]`` array or a Delta (linear, stateless).

    ``count_include_pad`` divides by the full window (flax's default) or by
    the number of in-bounds pixels.
    """
    is_delta = isinstance(x, Delta)
    if is_delta:
        check_delta("avg_pool", "x", x)
    else:
        check_nhwc("avg_pool", "x", x)
    src = x.masked_values(jnp.float32) if is_delta else x.astype(jnp.float32)
    window, strides, pads = _window_args("avg_pool", src.shape[1:3], window, strides, padding)
    dims, steps, full_pads = (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0))
    total = lax.reduce_window(src, 0.0, lax.add, dims, steps, full_pads)
    if count_include_pad:
        out = total / (window[0] * window[1])
    else:
        ones = jnp.ones((1, *src.shape[1:3], 1), jnp.float32)
        out = total / lax.reduce_window(ones, 0.0, lax.add, dims, steps, full_pads)
    if not is_delta:
        return out.astype(x.dtype)
    mask = geo.receptive_field_mask(x.mask, window, strides, pads)
    return Delta(out.astype(x.dtype), mask)


def global_avg_pool_init(x: jax.Array) -> tuple[jax.Array, GlobalPoolState]:
    """First frame: the mean over H, W of ``[N, H, W, C]``, as ``[N, C]``."""
    check_nhwc("global_avg_pool_init", "x", x)
    acc = jnp.mean(x.astype(STATE_DTYPE), axis=(1, 2))
    return acc.astype(x.dtype), GlobalPoolState(acc)


def global_avg_pool(state: GlobalPoolState, x: Delta) -> tuple[jax.Array, GlobalPoolState]:
    """Adds ``sum(active deltas) / (H * W)`` to the pooled vector; returns it dense ``[N, C]``.

    After this the network continues densely (heads are cheap).
    """
    check_delta("global_avg_pool", "x", x)
    n, h, w, c = x.shape
    check_state("global_avg_pool", "state.acc", state.acc, (n, c), "global_avg_pool_init")
    acc = state.acc + jnp.sum(x.masked_values(STATE_DTYPE), axis=(1, 2)) / (h * w)
    return acc.astype(x.dtype), GlobalPoolState(acc)
