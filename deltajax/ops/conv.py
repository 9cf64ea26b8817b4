"""Convolution and transposed convolution on deltas (linear layers, stateless).

Weights are HWIO ``[kh, kw, C_in / groups, C_out]`` like ``flax.linen.Conv``.
A dense ``[N, H, W, C]`` array is the first frame (bias added); a Delta is a
later frame (bias never added again, inactive inputs read as zero, output
mask by the receptive-field rule).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deltajax.backend import dispatch
from deltajax.ops import _geometry as geo
from deltajax.ops._delta import Delta, check_channels, check_delta, check_dtype, check_nhwc, per_channel

_DIMS = ("NHWC", "HWIO", "NHWC")
HIGHEST = lax.Precision.HIGHEST


def _check_conv_args(op: str, x, kernel, bias, groups: int) -> None:
    if isinstance(x, Delta):
        check_delta(op, "x", x)
        shape = x.values.shape
    else:
        check_nhwc(op, "x", x)
        shape = x.shape
    if kernel.ndim != 4:
        raise ValueError(
            f"{op}: argument 'kernel' must be HWIO [kh, kw, C_in/groups, C_out], expected rank 4, "
            f"got shape {tuple(kernel.shape)}"
        )
    check_dtype(op, "kernel", kernel)
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: argument 'groups' must be a positive int, got {groups!r}")
    cin = kernel.shape[2] * groups
    check_channels(op, "x", shape, cin, f"kernel takes {kernel.shape[2]} per group x {groups} groups")
    if kernel.shape[3] % groups:
        raise ValueError(
            f"{op}: argument 'kernel' has {kernel.shape[3]} output channels, expected a multiple of groups={groups}"
        )
    if bias is not None and tuple(bias.shape) != (kernel.shape[3],):
        raise ValueError(f"{op}: argument 'bias' must have shape ({kernel.shape[3]},), got {tuple(bias.shape)}")


def linear_conv(
    x,
    kernel,
    bias,
    *,
    strides,
    pads,
    lhs_dilation,
    rhs_dilation,
    groups,
    precision,
):
    """The one convolution both ops lower to, dense or delta."""
    kwargs = dict(
        window_strides=strides,
        padding=pads,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=_DIMS,
        feature_group_count=groups,
        precision=precision,
        preferred_element_type=jnp.float32,
    )
    if not isinstance(x, Delta):
        y = lax.conv_general_dilated(x, kernel.astype(x.dtype), **kwargs)
        if bias is not None:
            y = y + per_channel(bias.astype(jnp.float32), 4)
        return y.astype(x.dtype)
    geometry = dict(strides=strides, pads=pads, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation, groups=groups)
    values, mask = dispatch(
        "deltajax_conv",
        functools.partial(_delta_conv_reference, conv_kwargs=kwargs, geometry=geometry),
        functools.partial(_delta_conv_native, geometry=geometry, precision=precision),
        x.values,
        x.mask,
        kernel.astype(x.dtype),
    )
    return Delta(values, mask)


def _delta_conv_reference(values, mask, kernel, *, conv_kwargs, geometry):
    masked = jnp.where(mask[..., None], values, jnp.zeros((), values.dtype))
    out = lax.conv_general_dilated(masked, kernel, **conv_kwargs).astype(values.dtype)
    out_mask = geo.receptive_field_mask(
        mask,
        kernel.shape[:2],
        geometry["strides"],
        geometry["pads"],
        base_dilation=geometry["lhs_dilation"],
        window_dilation=geometry["rhs_dilation"],
    )
    return out, out_mask


def full_float32(precision) -> bool:
    """True when ``precision`` (None: the ``jax_default_matmul_precision`` in force) asks for float32 products."""
    if precision is None:
        precision = jax.config.jax_default_matmul_precision
    if isinstance(precision, tuple | list):
        precision = precision[0]
    if isinstance(precision, lax.Precision):
        return precision == HIGHEST
    return str(precision).lower() in ("highest", "float32")


def _output_size(size, k, stride, pads, lhs, rhs):
    dilated = (size - 1) * lhs + 1
    return (dilated + pads[0] + pads[1] - geo.effective_size(k, rhs)) // stride + 1


def output_size(values, kernel, geometry) -> tuple[int, int]:
    """``(Ho, Wo)`` of a delta convolution of ``values`` ``[N, H, W, C]`` with ``geometry``."""
    return tuple(
        _output_size(
            values.shape[1 + a],
            kernel.shape[a],
            geometry["strides"][a],
            geometry["pads"][a],
            geometry["lhs_dilation"][a],
            geometry["rhs_dilation"][a],
        )
        for a in (0, 1)
    )


def native_conv_attrs(geometry, precision) -> dict:
    """The FFI attributes of the native convolution targets."""
    return dict(
        stride_h=np.int32(geometry["strides"][0]),
        stride_w=np.int32(geometry["strides"][1]),
        pad_top=np.int32(geometry["pads"][0][0]),
        pad_left=np.int32(geometry["pads"][1][0]),
        lhs_dil_h=np.int32(geometry["lhs_dilation"][0]),
        lhs_dil_w=np.int32(geometry["lhs_dilation"][1]),
        rhs_dil_h=np.int32(geometry["rhs_dilation"][0]),
        rhs_dil_w=np.int32(geometry["rhs_dilation"][1]),
        groups=np.int32(geometry["groups"]),
        precision=np.int32(1 if full_float32(precision) else 0),
    )


OUT_TILE = (8, 16)  # rows, columns of the CUDA tile-sparse kernel's output tiles (kOutTileRows, kOutTileCols)


def list_workspace_size(n: int, ho: int, wo: int) -> int:
    """Int32 elements of a native convolution's workspace for an ``[n, ho, wo, C]`` output: the active output
    pixels (``n * ho * wo``), the active output tiles of ``OUT_TILE`` pixels, then the two counts
    (``conv_list_size`` in csrc/common/params.h)."""
    tiles = n * -(-ho // OUT_TILE[0]) * -(-wo // OUT_TILE[1])
    return n * ho * wo + tiles + 2


def _delta_conv_native(values, mask, kernel, *, geometry, precision):
    n, (ho, wo) = values.shape[0], output_size(values, kernel, geometry)
    out, out_mask, _ = jax.ffi.ffi_call(
        "deltajax_conv",
        (
            jax.ShapeDtypeStruct((n, ho, wo, kernel.shape[3]), values.dtype),
            jax.ShapeDtypeStruct((n, ho, wo), jnp.bool_),
            jax.ShapeDtypeStruct((list_workspace_size(n, ho, wo),), jnp.int32),
        ),
        vmap_method="sequential",
    )(values, mask, kernel, **native_conv_attrs(geometry, precision))
    return out, out_mask


def conv_1x1_native(values, mask, kernel, *, precision):
    """The native delta conv with a ``[C_in, C_out]`` matrix as 1x1 kernel; returns the values only."""
    geometry = dict(strides=(1, 1), pads=((0, 0), (0, 0)), lhs_dilation=(1, 1), rhs_dilation=(1, 1), groups=1)
    out, _ = _delta_conv_native(values, mask, kernel[None, None], geometry=geometry, precision=precision)
    return out


def conv(
    x: jax.Array | Delta,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    strides=1,
    padding="SAME",
    dilation=1,
    groups: int = 1,
    precision=None,
) -> jax.Array | Delta:
    """2-D convolution of a dense frame or a Delta, NHWC.

    Args:
      x: ``[N, H, W, C_in]`` dense (first frame) or a Delta (later frames).
      kernel: ``[kh, kw, C_in / groups, C_out]``; any size, non-square too.
      bias: ``[C_out]`` or None; added on the dense first frame only.
      strides, dilation: int or (h, w) pair.
      padding: 'SAME' (XLA/TF), 'VALID', an int, or ((lo, hi), (lo, hi)).
      groups: feature groups; ``groups == C_in`` is depthwise.
      precision: as for ``lax.conv_general_dilated``; None follows ``jax.default_matmul_precision``
        (on GPUs the default lets float32 run as TF32 on tensor cores).

    Returns:
      ``[N, Ho, Wo, C_out]`` dense, or a Delta whose mask is the OR of the
      input mask over each output pixel's receptive field. A 16-bit Delta's
      values are rounded to its dtype, and nothing takes that rounding back:
      a stateful consumer sums it frame after frame. Where no activation
      follows, ``conv_activation`` with the identity accumulates the float32
      result and feeds the rounding back (``deltajax.delta`` does so in 16-bit
      streams: ``DeltaConfig.feedback``).

    Example:
      >>> w = jnp.ones((3, 3, 2, 4)); x = jnp.ones((1, 5, 5, 2))
      >>> conv(x, w).shape
      (1, 5, 5, 4)
    """
    geometry = conv_geometry(
        "conv", x, kernel, bias, strides=strides, padding=padding, dilation=dilation, groups=groups
    )
    return linear_conv(x, kernel, bias, precision=precision, **geometry)


def conv_geometry(op: str, x, kernel, bias, *, strides, padding, dilation, groups) -> dict:
    """Checks a convolution's arguments (errors name ``op``); its strides, pads, dilations and groups."""
    _check_conv_args(op, x, kernel, bias, groups)
    strides = geo.pair(op, "strides", strides)
    dilation = geo.pair(op, "dilation", dilation)
    spatial = (x.values if isinstance(x, Delta) else x).shape[1:3]
    pads = geo.window_pads(op, spatial, kernel.shape[:2], strides, dilation, padding)
    return dict(strides=strides, pads=pads, lhs_dilation=(1, 1), rhs_dilation=dilation, groups=groups)


def conv_transpose(
    x: jax.Array | Delta,
    kernel: jax.Array,
    bias: jax.Array | None = None,
    *,
    strides=1,
    padding="SAME",
    dilation=1,
    groups: int = 1,
    precision=None,
) -> jax.Array | Delta:
    """Transposed convolution, as ``jax.lax.conv_transpose`` / ``flax.linen.ConvTranspose``.

    Args:
      x: ``[N, H, W, C_in]`` dense (first frame) or a Delta.
      kernel: ``[kh, kw, C_in / groups, C_out]`` (not flipped, flax's default).
      bias: ``[C_out]`` or None; first frame only.
      strides: upsampling factor, int or pair.
      padding: 'SAME' (output = input * stride), 'VALID', or explicit pairs
        of the underlying dilated-input convolution.

    Returns:
      ``[N, Ho, Wo, C_out]`` dense or a Delta.
    """
    _check_conv_args("conv_transpose", x, kernel, bias, groups)
    strides = geo.pair("conv_transpose", "strides", strides)
    dilation = geo.pair("conv_transpose", "dilation", dilation)
    pads = geo.transpose_pads(kernel.shape[:2], strides, dilation, padding)
    return linear_conv(
        x,
        kernel,
        bias,
        strides=(1, 1),
        pads=pads,
        lhs_dilation=strides,
        rhs_dilation=dilation,
        groups=groups,
        precision=precision,
    )
