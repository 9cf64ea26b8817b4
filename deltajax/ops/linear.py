"""Per-channel affine layers (inference batch norm, bias) and matmul heads on deltas.

Linear rule: the layer applied to the change, constant terms on the first
frame only. A dense array is the first frame; a Delta a later one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from deltajax.backend import dispatch
from deltajax.ops._delta import Delta, check_channels, check_delta, check_dtype, check_vector, per_channel
from deltajax.ops.conv import conv_1x1_native


def fold_batch_norm(scale, offset, mean, var, eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
    """Inference batch norm ``(x - mean) / sqrt(var + eps) * scale + offset`` as ``x * mul + add``.

    All arguments are ``[C]``; returns ``(mul, add)``, each ``[C]`` float32.
    """
    mul = scale.astype(jnp.float32) * lax.rsqrt(var.astype(jnp.float32) + eps)
    add = offset.astype(jnp.float32) - mean.astype(jnp.float32) * mul
    return mul, add


def affine(x: jax.Array | Delta, mul: jax.Array, add: jax.Array | None = None) -> jax.Array | Delta:
    """``x * mul + add`` per channel; on a Delta only ``d * mul`` (``add`` is frame-0 only).

    Args:
      x: ``[..., C]`` dense array or a Delta ``[N, H, W, C]``.
      mul, add: ``[C]``.
    """
    values = x.values if isinstance(x, Delta) else x
    if isinstance(x, Delta):
        check_delta("affine", "x", x)
    else:
        check_dtype("affine", "x", x)
    check_vector("affine", "mul", mul, values.shape[-1])
    check_vector("affine", "add", add, values.shape[-1])
    if isinstance(x, Delta):
        out = dispatch("deltajax_affine", _affine_reference, _affine_native, x.values, x.mask, mul.astype(jnp.float32))
        return Delta(out, x.mask)
    mul = per_channel(mul.astype(jnp.float32), values.ndim)
    y = x.astype(jnp.float32) * mul
    if add is not None:
        y = y + per_channel(add.astype(jnp.float32), y.ndim)
    return y.astype(x.dtype)


def _affine_reference(values, mask, mul):
    return (values.astype(jnp.float32) * per_channel(mul, values.ndim)).astype(values.dtype)


def _affine_native(values, mask, mul):
    return jax.ffi.ffi_call(
        "deltajax_affine", jax.ShapeDtypeStruct(values.shape, values.dtype), vmap_method="sequential"
    )(values, mask, mul)


def batch_norm(x, scale, offset, mean, var, eps: float = 1e-5):
    """Inference batch norm of a dense array or a Delta (offset on the first frame only)."""
    mul, add = fold_batch_norm(scale, offset, mean, var, eps)
    return affine(x, mul, add)


def dense(x: jax.Array | Delta, kernel: jax.Array, bias: jax.Array | None = None, *, precision=None):
    """Matmul over the channel axis: ``x @ kernel (+ bias on the first frame)``.

    Args:
      x: ``[..., C_in]`` dense or a Delta ``[N, H, W, C_in]``.
      kernel: ``[C_in, C_out]``.
      bias: ``[C_out]`` or None.
    """
    values = x.values if isinstance(x, Delta) else x
    if isinstance(x, Delta):
        check_delta("dense", "x", x)
    else:
        check_dtype("dense", "x", x)
    if kernel.ndim != 2:
        raise ValueError(f"dense: argument 'kernel' must be [C_in, C_out], got shape {tuple(kernel.shape)}")
    check_channels("dense", "x", values.shape, kernel.shape[0], "kernel rows")
    check_vector("dense", "bias", bias, kernel.shape[1])
    if isinstance(x, Delta):
        # Per pixel a matmul is a 1x1 convolution: the native conv computes it at active pixels only.
        def reference(values, mask, kernel):
            src = Delta(values, mask).masked_values()
            return jnp.matmul(src, kernel, precision=precision, preferred_element_type=jnp.float32).astype(x.dtype)

        def native(values, mask, kernel):
            return conv_1x1_native(values, mask, kernel, precision=precision)

        return Delta(dispatch("deltajax_conv", reference, native, x.values, x.mask, kernel.astype(x.dtype)), x.mask)
    src = x
    y = jnp.matmul(src, kernel.astype(src.dtype), precision=precision, preferred_element_type=jnp.float32)
    if bias is not None:
        y = y + per_channel(bias.astype(jnp.float32), y.ndim)
    return y.astype(x.dtype)
