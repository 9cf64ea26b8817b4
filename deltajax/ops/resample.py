"""Nearest and bilinear upsampling of dense arrays and Deltas (linear, stateless)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
    values = _resize(x.masked_values(jnp.float32), factor, method).astype(x.dtype)
    mask = _resize(x.mask[..., None].astype(jnp.float32), factor, method)[..., 0] > 0
    return Delta(values, mask)
