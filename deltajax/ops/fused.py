"""A delta convolution and the activation on its output (conv -> batch-norm scale -> activation) as one op.

The activation rule takes the convolution's float32 result: in a 16-bit stream
it is not rounded to the stream's dtype before the rule accumulates it, so the
only rounding per layer is that of the emitted output, which the rule feeds
back. On the CPU each tile of output pixels goes through the rule while it is
still in cache; on CUDA the tensor-core and depthwise convolutions run the
rule in their epilogue (other convolutions write a float32 buffer that the
activation kernel reads); the reference computes the same with the ops.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from deltajax.backend import dispatch
from deltajax.ops._delta import STATE_DTYPE, Delta, check_delta, check_state, check_vector
from deltajax.ops.config import Truncation, is_traced
from deltajax.ops.conv import conv_geometry, linear_conv, list_workspace_size, native_conv_attrs, output_size
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
        # The float32 convolution of the values: exact products of 16-bit values, so TF32 loses nothing there.
        wide = precision if values.dtype == jnp.float32 else None
        c = linear_conv(
            Delta(values.astype(jnp.float32), mask), kernel.astype(jnp.float32), None, precision=wide, **geometry
        )
        y, new = activation(
            ActivationState(acc, sent),
            c,
            act,
            truncation,
            scale=scale,
            slopes=params[0] if params else None,
            out_dtype=values.dtype,
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
    values, keep, acc, sent, conv_mask = dispatch(
        target, composed, native, *args, native_ok=native_ok, by_platform=True
    )
    return Delta(values, keep), ActivationState(acc, sent), conv_mask


def workspace_size(platform: str, shape: tuple[int, int, int, int], dtype) -> int:
    """Int32 elements of the fused target's workspace on ``platform`` for an output ``shape`` ``[N, Ho, Wo, C]``
    of ``dtype``: the convolution's lists and counts (``list_workspace_size``); on CUDA then one arrival counter per
    row tile of 128 pixels, from the next 16-byte boundary on the partial truncation scores (row tiles x
    ceil(C / 64) x 128 float32), then for 16-bit values the float32 pre-activation (``conv_activation_workspace``
    in csrc/cuda/conv_activation.cu)."""
    lists = list_workspace_size(*shape[:3])
    if platform != "cuda":
        return lists
    pixels = shape[0] * shape[1] * shape[2]
    tiles, channel_tiles = -(-pixels // 128), -(-shape[3] // 64)
    scores = -(-(lists + tiles) // 4) * 4
    pre = scores + tiles * channel_tiles * 128
    return pre + (0 if jnp.dtype(dtype) == jnp.float32 else pixels * shape[3])


def _native(*args, target, geometry, act, truncation, precision, platform):
    """``values, mask, kernel, scale, [slopes,] acc, sent`` -> the fused target's results on ``platform``."""
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
            jax.ShapeDtypeStruct((workspace_size(platform, shape, values.dtype),), jnp.int32),
        ),
        input_output_aliases={len(args) - 2: 2, len(args) - 1: 3},
        vmap_method="sequential",
    )(*args, **native_conv_attrs(geometry, precision), **native_activation_attrs(act, truncation))
    return out, keep, acc, sent, conv_mask
