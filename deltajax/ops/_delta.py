"""The delta tensor and the input checks shared by every op.

A delta tensor carries the change of an NHWC activation since the previous
frame: ``values`` ``[N, H, W, C]`` and a per-pixel ``mask`` ``[N, H, W]``.
Values at pixels whose mask is False are unspecified: no op reads them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
STATE_DTYPE = jnp.dtype(jnp.float32)


class Delta(NamedTuple):
    """Sparse update of an NHWC tensor.

    Attributes:
      values: ``[N, H, W, C]`` float32, bfloat16 or float16; the change at
        active pixels, unspecified elsewhere.
      mask: ``[N, H, W]`` bool; True where the pixel carries an update.
    """

    values: jax.Array
    mask: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def dtype(self) -> jnp.dtype:
        return self.values.dtype

    def masked_values(self, dtype=None) -> jax.Array:
        """Values with inactive pixels set to zero (never the unspecified values)."""
        v = self.values if dtype is None else self.values.astype(dtype)
        return jnp.where(self.mask[..., None], v, jnp.zeros((), v.dtype))


def _dtype_names() -> str:
    return "/".join(d.name for d in SUPPORTED_DTYPES)


def check_dtype(op: str, name: str, x) -> None:
    """Raises TypeError unless ``x`` has a dtype deltajax computes in."""
    dtype = jnp.dtype(x.dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{op}: argument '{name}' has dtype {dtype.name}, expected one of "
            f"{_dtype_names()}; convert it first, e.g. x.astype(jnp.float32)"
        )


def check_nhwc(op: str, name: str, x) -> None:
    """Raises unless ``x`` is a rank-4 NHWC array of a supported dtype."""
    if isinstance(x, Delta):
        raise TypeError(
            f"{op}: argument '{name}' is a Delta, expected a dense [N, H, W, C] array "
            "(dense arrays go to the first frame, Deltas to the later frames)"
        )
    if np.ndim(x) != 4:
        raise ValueError(
            f"{op}: argument '{name}' must be NHWC [N, H, W, C], expected rank 4, "
            f"got rank {np.ndim(x)} with shape {tuple(np.shape(x))}"
        )
    check_dtype(op, name, x)


def check_delta(op: str, name: str, x) -> None:
    """Raises unless ``x`` is a well-formed Delta (rank, dtype, mask shape)."""
    if not isinstance(x, Delta):
        raise TypeError(f"{op}: argument '{name}' must be a deltajax.ops.Delta on delta frames, got {type(x).__name__}")
    if np.ndim(x.values) != 4:
        raise ValueError(
            f"{op}: argument '{name}.values' must be NHWC [N, H, W, C], expected rank 4, "
            f"got rank {np.ndim(x.values)} with shape {tuple(np.shape(x.values))}"
        )
    check_dtype(op, f"{name}.values", x.values)
    expected = tuple(x.values.shape[:3])
    if tuple(x.mask.shape) != expected:
        raise ValueError(
            f"{op}: argument '{name}.mask' must have shape [N, H, W] = {expected}, got {tuple(x.mask.shape)}"
        )
    if jnp.dtype(x.mask.dtype) != jnp.dtype(jnp.bool_):
        raise TypeError(f"{op}: argument '{name}.mask' must be bool, got {jnp.dtype(x.mask.dtype).name}")


def check_state(op: str, name: str, leaf, shape: tuple[int, ...], init_name: str) -> None:
    """Raises unless a state leaf has the shape a stream of ``shape`` created, in float32."""
    got = (tuple(leaf.shape), jnp.dtype(leaf.dtype).name)
    want = (tuple(shape), STATE_DTYPE.name)
    if got != want:
        raise ValueError(
            f"{op}: argument '{name}' belongs to a stream of shape {got[0]} {got[1]}, "
            f"but this frame needs shape {want[0]} {want[1]}; start the stream again "
            f"with {init_name} (first frame, scene cut or resolution change)"
        )


def check_vector(op: str, name: str, v, channels: int) -> None:
    """Raises unless ``v`` (when given) is a per-channel vector ``[channels]``."""
    if v is not None and tuple(jnp.shape(v)) != (channels,):
        raise ValueError(f"{op}: argument '{name}' must have shape ({channels},), got {tuple(jnp.shape(v))}")


def check_channels(op: str, name: str, x_shape, expected: int, what: str) -> None:
    """Raises unless the last (channel) axis has ``expected`` entries; hints at NCHW."""
    got = x_shape[-1]
    if got != expected:
        hint = ""
        if len(x_shape) == 4 and x_shape[1] == expected:
            hint = " (axis 1 matches: was an NCHW tensor passed? deltajax expects NHWC)"
        raise ValueError(
            f"{op}: argument '{name}' has {got} channels on its last axis, expected {expected} ({what}){hint}"
        )


def zeros_state(shape) -> jax.Array:
    """A float32 zero state buffer."""
    return jnp.zeros(shape, STATE_DTYPE)


def per_channel(v: jax.Array, ndim: int) -> jax.Array:
    """A ``[C]`` vector shaped ``[1, ..., 1, C]`` to broadcast over a rank-``ndim`` tensor explicitly."""
    return jnp.reshape(v, (1,) * (ndim - 1) + (v.shape[-1],))


def emit(wide: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """Delta values computed in float32 (``[N, H, W, C]``), rounded once to the delta ``dtype`` for emission.

    Returns ``(values, sent)``: the values in ``dtype`` and exactly the same values in float32, for the emitter's
    error feedback. For bfloat16 the rounding is ``lax.reduce_precision`` to 8 exponent and 7 mantissa bits before
    the conversion: XLA on a GPU removes a float32 -> bfloat16 -> float32 round trip within a program (it allows
    excess precision), so a consumer that widens ``values`` again could otherwise receive the unrounded float32,
    while the emitter records the rounded value, and the two would drift apart frame by frame. (For float16
    ``reduce_precision`` would not model the subnormals; XLA keeps its round trips.)
    """
    if jnp.dtype(dtype) == jnp.bfloat16:
        rounded = lax.reduce_precision(wide, exponent_bits=8, mantissa_bits=7)
        return rounded.astype(dtype), rounded
    values = wide.astype(dtype)
    return values, values.astype(STATE_DTYPE)
