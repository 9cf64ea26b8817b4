"""A delta convolution and the activation on its output (conv -> batch-norm scale -> activation) as one op.

Where a backend has the fused kernel (the CPU), each tile of output pixels goes
through the activation rule while it is still in cache, so the convolution's
output is never written out and read back; elsewhere the op runs ``conv`` and
``activation`` (each on its native kernels). The results are the same.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from deltajax.backend import dispatch
from deltajax.ops._delta import STATE_DTYPE, Delta, check_delta, check_state, check_vector
from deltajax.ops.config import Truncation, is_traced
from deltajax.ops.conv import conv_geometry, linear_conv, native_conv_attrs, output_size
from deltajax.ops.elementwise import (
    PRELU_TARGET,
    ActivationState,
    activation,
    as_activation,
    check_slopes,
    has_native_kernel,
    native_activation_attrs,
)


def conv_activation(
    state: ActivationState,
    x: Delta,
    kernel: jax.Array,
    activation_fn="relu",
    truncation: Truncation = Truncation(),
    scale: jax.Array | None = None,
    *,
    strides=1,
    padding="SAME",
    dilation=1,
    groups: int = 1,
    precision=None,
    slopes: jax.Array | None = None,
) -> tuple[Delta, ActivationState, jax.Array]:
    """``activation(state, conv(x, kernel, ...), activation_fn, truncation, scale)`` as one op.

    Args:
      state: the activation's state, ``[N, Ho, Wo, C_out]`` (``activation_init``
        of the convolution's first-frame output).
      x: the input Delta ``[N, H, W, C_in]``.
      kernel, strides, padding, dilation, groups, precision: as for ``conv``.
      activation_fn, truncation, scale, slopes: as for ``activation`` (``[C_out]``).

    Returns:
      The output Delta (mask: the pixels the rule kept), the new state, and the
      convolution's own output mask ``[N, Ho, Wo]`` (before truncation).
    """
    op = "conv_activation"
    act = as_activation(op, activation_fn)
    check_delta(op, "x", x)
    geometry = conv_geometry(op, x, kernel, None, strides=strides, padding=padding, dilation=dilation, groups=groups)
    out_shape = (x.shape[0], *output_size(x.values, kernel, geometry), kernel.shape[3])
    check_state(op, "state.acc", state.acc, out_shape, "activation_init")
    check_state(op, "state.sent", state.sent, out_shape, "activation_init")
    check_vector(op, "scale", scale, kernel.shape[3])
    check_slopes(op, act, slopes, kernel.shape[3])
    scale = jnp.ones(kernel.shape[3:], jnp.float32) if scale is None else jnp.asarray(scale, jnp.float32)

    def composed(values, mask, kernel, scale, *rest):  # rest: [slopes,] acc, sent
        *params, acc, sent = rest
        c = linear_conv(Delta(values, mask), kernel, None, precision=precision, **geometry)
        y, new = activation(
            ActivationState(acc, sent), c, act, truncation, scale=scale, slopes=params[0] if params else None
        )
        return y.values, y.mask, new.acc, new.sent, c.mask

    params = () if slopes is None else (jnp.asarray(slopes, jnp.float32),)  # prelu's: one more operand
    args = (x.values, x.mask, kernel.astype(x.dtype), scale, *params, state.acc, state.sent)
    # A named activation with a number as threshold: the fused kernel (traced thresholds: conv, then the rule)
    target = "deltajax_conv_activation" if slopes is None else PRELU_TARGET["deltajax_conv_activation"]
    native = functools.partial(
        _native, target=target, geometry=geometry, act=act, truncation=truncation, precision=precision
    )
    native_ok = has_native_kernel(act) and not is_traced(truncation.threshold)
    values, keep, acc, sent, conv_mask = dispatch(target, composed, native, *args, native_ok=native_ok)
    return Delta(values, keep), ActivationState(acc, sent), conv_mask


def _native(*args, target, geometry, act, truncation, precision):
    """``values, mask, kernel, scale, [slopes,] acc, sent`` -> the fused target's results."""
    values, kernel = args[0], args[2]
    n, (ho, wo) = values.shape[0], output_size(values, kernel, geometry)
    shape = (n, ho, wo, kernel.shape[3])
    out, keep, acc, sent, conv_mask, _ = jax.ffi.ffi_call(
        target,
        (
            jax.ShapeDtypeStruct(shape, values.dtype),
            jax.ShapeDtypeStruct(shape[:3], jnp.bool_),
            jax.ShapeDtypeStruct(shape, STATE_DTYPE),
            jax.ShapeDtypeStruct(shape, STATE_DTYPE),
            jax.ShapeDtypeStruct(shape[:3], jnp.bool_),
            jax.ShapeDtypeStruct((n * ho * wo + 1,), jnp.int32),  # workspace: active output pixels + count
        ),
        input_output_aliases={len(args) - 2: 2, len(args) - 1: 3},
        vmap_method="sequential",
    )(*args, **native_conv_attrs(geometry, precision), **native_activation_attrs(act, truncation))
    return out, keep, acc, sent, conv_mask
