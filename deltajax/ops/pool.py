"""Pooling on deltas: max pool (stateful), average pool (linear), global average pool."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deltajax.backend import dispatch
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
    geometry = dict(window=window, strides=strides, pads=pads)
    reference = functools.partial(_max_pool_reference, **geometry)
    args = (x.values, x.mask, state.acc)
    if _native_pads(window, pads):
        out, mask, acc = dispatch(
            "deltajax_max_pool", reference, functools.partial(_max_pool_native, **geometry), *args
        )
    else:  # windows that can lie entirely in the padding: the reference
        out, mask, acc = reference(*args)
    return Delta(out, mask), MaxPoolState(acc)


def _native_pads(window, pads) -> bool:
    return all(0 <= lo < k and 0 <= hi < k for k, (lo, hi) in zip(window, pads, strict=True))


def _max_pool_reference(values, mask, acc, *, window, strides, pads):
    new = acc + Delta(values, mask).masked_values(STATE_DTYPE)
    out = _max_window(new, window, strides, pads) - _max_window(acc, window, strides, pads)
    return out.astype(values.dtype), geo.receptive_field_mask(mask, window, strides, pads), new


def _pool_out_shape(values, window, strides, pads):
    n, h, w, c = values.shape
    ho, wo = ((size + lo + hi - k) // s + 1 for size, k, s, (lo, hi) in zip((h, w), window, strides, pads, strict=True))
    return (n, ho, wo, c)


def _pool_attrs(window, strides, pads):
    return dict(
        kh=np.int32(window[0]),
        kw=np.int32(window[1]),
        stride_h=np.int32(strides[0]),
        stride_w=np.int32(strides[1]),
        pad_top=np.int32(pads[0][0]),
        pad_left=np.int32(pads[1][0]),
    )


def _max_pool_native(values, mask, acc, *, window, strides, pads):
    shape = _pool_out_shape(values, window, strides, pads)
    return jax.ffi.ffi_call(
        "deltajax_max_pool",
        (
            jax.ShapeDtypeStruct(shape, values.dtype),
            jax.ShapeDtypeStruct(shape[:-1], jnp.bool_),
            jax.ShapeDtypeStruct(acc.shape, STATE_DTYPE),
        ),
        input_output_aliases={2: 2},
        vmap_method="broadcast_all",
    )(values, mask, acc, **_pool_attrs(window, strides, pads))


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
    window, strides, pads = _window_args("avg_pool", x.shape[1:3], window, strides, padding)
    geometry = dict(window=window, strides=strides, pads=pads, count_include_pad=count_include_pad)
    if not is_delta:
        return _avg_pool_dense(x.astype(jnp.float32), **geometry).astype(x.dtype)
    reference = functools.partial(_avg_pool_reference, **geometry)
    if _native_pads(window, pads):
        native = functools.partial(_avg_pool_native, **geometry)
        return Delta(*dispatch("deltajax_avg_pool", reference, native, x.values, x.mask))
    return Delta(*reference(x.values, x.mask))


def _avg_pool_reference(values, mask, *, window, strides, pads, count_include_pad):
    out = _avg_pool_dense(Delta(values, mask).masked_values(jnp.float32), window, strides, pads, count_include_pad)
    return out.astype(values.dtype), geo.receptive_field_mask(mask, window, strides, pads)


def _avg_pool_native(values, mask, *, window, strides, pads, count_include_pad):
    shape = _pool_out_shape(values, window, strides, pads)
    return jax.ffi.ffi_call(
        "deltajax_avg_pool",
        (jax.ShapeDtypeStruct(shape, values.dtype), jax.ShapeDtypeStruct(shape[:-1], jnp.bool_)),
        vmap_method="broadcast_all",
    )(values, mask, **_pool_attrs(window, strides, pads), count_include_pad=np.int32(count_include_pad))


def _avg_pool_dense(src, window, strides, pads, count_include_pad):
    dims, steps, full_pads = (1, *window, 1), (1, *strides, 1), ((0, 0), *pads, (0, 0))
    total = lax.reduce_window(src, 0.0, lax.add, dims, steps, full_pads)
    if count_include_pad:
        out = total / (window[0] * window[1])
    else:
        ones = jnp.ones((1, *src.shape[1:3], 1), jnp.float32)
        out = total / lax.reduce_window(ones, 0.0, lax.add, dims, steps, full_pads)
    return out


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
    acc = dispatch("deltajax_global_avg_pool", _global_pool_reference, _global_pool_native, x.values, x.mask, state.acc)
    return acc.astype(x.dtype), GlobalPoolState(acc)


def _global_pool_reference(values, mask, acc):
    h, w = values.shape[1:3]
    return acc + jnp.sum(Delta(values, mask).masked_values(STATE_DTYPE), axis=(1, 2)) / (h * w)


def _global_pool_native(values, mask, acc):
    return jax.ffi.ffi_call(
        "deltajax_global_avg_pool",
        jax.ShapeDtypeStruct(acc.shape, STATE_DTYPE),
        input_output_aliases={2: 0},
        vmap_method="broadcast_all",
    )(values, mask, acc)
