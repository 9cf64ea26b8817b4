"""Add, concat and binary non-linear combinations (multiply, maximum) of deltas."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from deltajax.backend import dispatch
from deltajax.ops._delta import STATE_DTYPE, Delta, check_delta, check_dtype, check_nhwc, check_state
from deltajax.ops.config import Truncation
from deltajax.ops.elementwise import ActivationState, activation_dispatch, activation_init, as_activation


def _same_kind(op: str, xs) -> bool:
    """True if all are Deltas, False if all dense; raises on a mix."""
    kinds = {isinstance(x, Delta) for x in xs}
    if len(kinds) != 1:
        raise TypeError(f"{op}: arguments must be all dense (first frame) or all Deltas, got a mix")
    return kinds.pop()


def add(x: jax.Array | Delta, y: jax.Array | Delta) -> jax.Array | Delta:
    """``x + y`` of two dense arrays, or of two Deltas ``[N, H, W, C]`` (union of masks)."""
    if not _same_kind("add", (x, y)):
        check_dtype("add", "x", x)
        check_dtype("add", "y", y)
        return x + y
    check_delta("add", "x", x)
    check_delta("add", "y", y)
    if x.shape != y.shape:
        raise ValueError(f"add: arguments 'x' and 'y' must have the same shape, got {x.shape} and {y.shape}")
    if x.dtype != y.dtype:
        raise TypeError(f"add: arguments 'x' and 'y' must have the same dtype, got {x.dtype} and {y.dtype}")
    return Delta(*dispatch("deltajax_add", _add_reference, _add_native, x.values, x.mask, y.values, y.mask))


def _add_reference(xv, xm, yv, ym):
    values = Delta(xv, xm).masked_values(jnp.float32) + Delta(yv, ym).masked_values(jnp.float32)
    return values.astype(xv.dtype), xm | ym


def _add_native(xv, xm, yv, ym):
    return jax.ffi.ffi_call(
        "deltajax_add",
        (jax.ShapeDtypeStruct(xv.shape, xv.dtype), jax.ShapeDtypeStruct(xm.shape, jnp.bool_)),
        vmap_method="broadcast_all",
    )(xv, xm, yv, ym)


def add_activation_init(x: jax.Array, y: jax.Array, activation_fn="relu") -> tuple[jax.Array, ActivationState]:
    """First frame of ``f(x + y)`` (residual add fused with an activation)."""
    return activation_init(add(x, y), activation_fn)


def add_activation(
    state: ActivationState, x: Delta, y: Delta, activation_fn="relu", truncation: Truncation = Truncation()
) -> tuple[Delta, ActivationState]:
    """``f(x + y)`` on Deltas: the add, then the activation rule with its state, in one kernel.

    Equals ``activation(state, add(x, y), activation_fn, truncation)`` but for the sum, which is taken in
    float32 and never rounded to the values' dtype before the rule accumulates it (``add`` rounds it). With the
    identity it is an add whose 16-bit rounding is fed back (the transform's feedback node for adds).
    """
    act = as_activation("add_activation", activation_fn)
    check_delta("add_activation", "x", x)
    check_delta("add_activation", "y", y)
    if x.shape != y.shape or x.dtype != y.dtype:
        raise ValueError(
            f"add_activation: arguments 'x' and 'y' must have the same shape and dtype, got {x.shape} {x.dtype} "
            f"and {y.shape} {y.dtype}"
        )
    check_state("add_activation", "state.acc", state.acc, x.shape, "add_activation_init")
    check_state("add_activation", "state.sent", state.sent, x.shape, "add_activation_init")
    values, keep, acc, sent = activation_dispatch(
        "deltajax_add_activation", act, truncation, (x.values, x.mask, y.values, y.mask), (state.acc, state.sent)
    )
    return Delta(values, keep), ActivationState(acc, sent)


def concat(xs: Sequence[jax.Array | Delta]) -> jax.Array | Delta:
    """Concatenates along channels; Deltas: union of masks, absent sides read as zero."""
    xs = list(xs)
    if not xs:
        raise ValueError("concat: argument 'xs' must hold at least one tensor, got none")
    if not _same_kind("concat", xs):
        for i, x in enumerate(xs):
            check_nhwc("concat", f"xs[{i}]", x)
        return jnp.concatenate(xs, axis=-1)
    for i, x in enumerate(xs):
        check_delta("concat", f"xs[{i}]", x)
        if x.shape[:3] != xs[0].shape[:3] or x.dtype != xs[0].dtype:
            raise ValueError(
                f"concat: argument 'xs[{i}]' has shape {x.shape} {x.dtype}, expected [N, H, W] = "
                f"{xs[0].shape[:3]} and dtype {xs[0].dtype} like xs[0]"
            )
    mask = xs[0].mask
    for x in xs[1:]:
        mask = mask | x.mask
    return Delta(jnp.concatenate([x.masked_values() for x in xs], axis=-1), mask)


class BinaryState(NamedTuple):
    """Accumulated operands: ``acc_x`` ``[N, H, W, C]``, ``acc_y`` broadcastable to it; float32."""

    acc_x: jax.Array
    acc_y: jax.Array


def _check_broadcast(op: str, x_shape, y_shape) -> tuple[int, ...]:
    try:
        return tuple(jnp.broadcast_shapes(tuple(x_shape), tuple(y_shape)))
    except ValueError:
        raise ValueError(
            f"{op}: arguments 'x' {tuple(x_shape)} and 'y' {tuple(y_shape)} do not broadcast "
            "(y may be [N, 1, 1, C], e.g. a squeeze-excite gate)"
        ) from None


def binary_init(x: jax.Array, y: jax.Array, fn: Callable) -> tuple[jax.Array, BinaryState]:
    """First frame of ``fn(x, y)``; ``y`` may be ``[N, 1, 1, C]`` and broadcast over H, W."""
    check_nhwc("binary_init", "x", x)
    check_nhwc("binary_init", "y", y)
    _check_broadcast("binary_init", x.shape, y.shape)
    ax, ay = x.astype(STATE_DTYPE), y.astype(STATE_DTYPE)
    return fn(ax, ay).astype(x.dtype), BinaryState(ax, ay)


def binary(state: BinaryState, x: Delta, y: Delta, fn: Callable) -> tuple[Delta, BinaryState]:
    """Binary non-linear rule: ``fn(accx + dx, accy + dy) - fn(accx, accy)`` on the union of masks.

    Args:
      state: from ``binary_init`` or the previous frame.
      x: Delta ``[N, H, W, C]``.
      y: Delta of the same shape, or ``[N, 1, 1, C]`` with mask ``[N, 1, 1]``
        (a per-stream gate broadcast over the pixels).
      fn: the element-wise binary function, e.g. ``jnp.multiply``.
    """
    check_delta("binary", "x", x)
    check_delta("binary", "y", y)
    out_shape = _check_broadcast("binary", x.shape, y.shape)
    if out_shape != x.shape:
        raise ValueError(f"binary: argument 'y' {y.shape} must broadcast to 'x' {x.shape}, not enlarge it")
    check_state("binary", "state.acc_x", state.acc_x, x.shape, "binary_init")
    check_state("binary", "state.acc_y", state.acc_y, y.shape, "binary_init")
    reference = functools.partial(_binary_reference, fn=fn)
    args = (x.values, x.mask, y.values, y.mask, state.acc_x, state.acc_y)
    op = _BINARY_OPS.get(fn)
    n, h, w, c = x.shape
    native_shape = y.shape in (x.shape, (n, 1, 1, c))
    if op is None or not native_shape or x.dtype != y.dtype:  # other functions and broadcasts: the reference
        out, mask, ax, ay = reference(*args)
    else:
        out, mask, ax, ay = dispatch("deltajax_binary", reference, functools.partial(_binary_native, op=op), *args)
    return Delta(out, mask), BinaryState(ax, ay)


# Functions with a native kernel: the BinaryOp of csrc/common/params.h.
_BINARY_OPS = {jnp.multiply: 0, jnp.maximum: 1}


def _binary_reference(xv, xm, yv, ym, acc_x, acc_y, *, fn):
    ax = acc_x + Delta(xv, xm).masked_values(STATE_DTYPE)
    ay = acc_y + Delta(yv, ym).masked_values(STATE_DTYPE)
    out = fn(ax, ay) - fn(acc_x, acc_y)
    mask = jnp.broadcast_to(xm | ym, xm.shape)
    return out.astype(xv.dtype), mask, ax, ay


def _binary_native(xv, xm, yv, ym, acc_x, acc_y, *, op):
    return jax.ffi.ffi_call(
        "deltajax_binary",
        (
            jax.ShapeDtypeStruct(xv.shape, xv.dtype),
            jax.ShapeDtypeStruct(xm.shape, jnp.bool_),
            jax.ShapeDtypeStruct(acc_x.shape, STATE_DTYPE),
            jax.ShapeDtypeStruct(acc_y.shape, STATE_DTYPE),
        ),
        input_output_aliases={4: 2, 5: 3},
        vmap_method="broadcast_all",
    )(xv, xm, yv, ym, acc_x, acc_y, op=np.int32(op))


def multiply_init(x, y):
    """First frame of ``x * y``."""
    return binary_init(x, y, jnp.multiply)


def multiply(state: BinaryState, x: Delta, y: Delta) -> tuple[Delta, BinaryState]:
    """``x * y`` of two Deltas (e.g. a squeeze-excite gate ``[N, 1, 1, C]``)."""
    return binary(state, x, y, jnp.multiply)


def maximum_init(x, y):
    """First frame of ``max(x, y)``."""
    return binary_init(x, y, jnp.maximum)


def maximum(state: BinaryState, x: Delta, y: Delta) -> tuple[Delta, BinaryState]:
    """Element-wise ``max(x, y)`` of two Deltas."""
    return binary(state, x, y, jnp.maximum)
