"""Nearest and bilinear upsampling of dense arrays and Deltas (linear, stateless)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from deltajax.backend import dispatch
from deltajax.ops import _geometry as geo
from deltajax.ops._delta import Delta, check_delta, check_nhwc

UPSAMPLE_METHODS = ("nearest", "bilinear")


def _resize(x: jax.Array, factor: tuple[int, int], method: str) -> jax.Array:
    n, h, w, c = x.shape
    if method == "nearest":
        return jnp.repeat(jnp.repeat(x, factor[0], axis=1), factor[1], axis=2)
    return jax.image.resize(x, (n, h * factor[0], w * factor[1], c), "bilinear", antialias=False)


def upsample(x: jax.Array | Delta, factor=2, method: str = "nearest") -> jax.Array | Delta:
    """Upsamples ``[N, H, W, C]`` by integer factors, like ``jax.image.resize``.

    Args:
      x: dense (first frame) or a Delta.
      factor: int or (fh, fw).
      method: 'nearest' (pixel repeat) or 'bilinear' (half-pixel centres,
        as ``jax.image.resize(..., 'bilinear')``).

    Returns:
      ``[N, H * fh, W * fw, C]``; a Delta's mask marks every output pixel
      with a non-zero weight on an active input pixel.
    """
    if method not in UPSAMPLE_METHODS:
        raise ValueError(f"upsample: argument 'method' must be one of {UPSAMPLE_METHODS}, got {method!r}")
    factor = geo.pair("upsample", "factor", factor)
    if not isinstance(x, Delta):
        check_nhwc("upsample", "x", x)
        return _resize(x, factor, method)
    check_delta("upsample", "x", x)
    reference = functools.partial(_upsample_reference, factor=factor, method=method)
    native = functools.partial(_upsample_native, factor=factor, method=method)
    return Delta(*dispatch("deltajax_resample", reference, native, x.values, x.mask))


def _upsample_reference(values, mask, *, factor, method):
    out = _resize(Delta(values, mask).masked_values(jnp.float32), factor, method).astype(values.dtype)
    return out, _resize(mask[..., None].astype(jnp.float32), factor, method)[..., 0] > 0


@functools.lru_cache(maxsize=128)
def _taps(size: int, factor: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Input index and weight of the (at most two) taps of each output row, ``[size * factor, 2]`` each.

    Bilinear weights are read off ``jax.image.resize`` itself (resizing an identity matrix), so the native
    kernels use exactly the weights, and the non-zero pattern, of the reference.
    """
    out = size * factor
    taps = np.zeros((out, 2), np.int32)
    weights = np.zeros((out, 2), np.float32)
    if method == "nearest":
        taps[:, 0] = np.arange(out) // factor
        weights[:, 0] = 1.0
        return taps, weights
    with jax.ensure_compile_time_eval():
        matrix = np.asarray(
            jax.image.resize(jnp.eye(size, dtype=jnp.float32), (out, size), "bilinear", antialias=False)
        )
    for o in range(out):
        (nonzero,) = np.nonzero(matrix[o])
        if len(nonzero) > 2:
            raise AssertionError(f"upsample: bilinear row {o} has {len(nonzero)} taps, expected at most 2")
        taps[o, : len(nonzero)] = nonzero
        weights[o, : len(nonzero)] = matrix[o, nonzero]
    return taps, weights


def _upsample_native(values, mask, *, factor, method):
    n, h, w, c = values.shape
    taps_h, weights_h = _taps(h, factor[0], method)
    taps_w, weights_w = _taps(w, factor[1], method)
    shape = (n, h * factor[0], w * factor[1], c)
    return jax.ffi.ffi_call(
        "deltajax_resample",
        (jax.ShapeDtypeStruct(shape, values.dtype), jax.ShapeDtypeStruct(shape[:-1], jnp.bool_)),
        vmap_method="sequential",
    )(values, mask, taps_h, weights_h, taps_w, weights_w)
