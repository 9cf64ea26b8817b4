"""Delta values inside the interpreter: canonical pixel Deltas and element-level Sparse values.

Structural linear primitives (transpose, reshape, the matmuls of
``jax.image.resize``) move values between layouts where a per-pixel NHWC mask
has no meaning; there a delta is kept as ``Sparse``: values plus an
element-level activity map broadcastable to them. Ops of deltajax.ops take
the canonical ``Delta``; ``to_delta`` converts (a pixel is active if any of
its channels is).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from deltajax.ops import Delta


class Sparse(NamedTuple):
    """``values`` of any rank and a bool ``active`` broadcastable to them; inactive values unspecified."""

    values: jax.Array
    active: jax.Array

    def masked(self) -> jax.Array:
        return jnp.where(self.active, self.values, jnp.zeros((), self.values.dtype))

    def activity(self) -> jax.Array:
        return jnp.broadcast_to(self.active, self.values.shape)


def to_sparse(x: Delta | Sparse) -> Sparse:
    return Sparse(x.values, x.mask[..., None]) if isinstance(x, Delta) else x


def to_delta(x: Delta | Sparse) -> Delta:
    """The canonical NHWC Delta of a rank-4 value."""
    if isinstance(x, Delta):
        return x
    mask = jnp.any(x.activity(), axis=-1)
    return Delta(x.masked(), mask)


def active_fraction(x: Delta | Sparse) -> jax.Array:
    if isinstance(x, Delta):
        return jnp.mean(x.mask.astype(jnp.float32))
    return jnp.mean(x.activity().astype(jnp.float32))


def flat_delta(x: Delta | Sparse) -> Delta:
    """Any-rank value as a ``[1, 1, size, 1]`` Delta (for densify of non-image tensors)."""
    s = to_sparse(x)
    size = s.values.size
    return Delta(s.masked().reshape(1, 1, size, 1), s.activity().reshape(1, 1, size))
