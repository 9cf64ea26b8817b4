"""Sparsify (dense frame -> delta) and densify (delta -> dense), delta-semantics.md section 4."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deltajax.backend import dispatch
from deltajax.ops._delta import (
    STATE_DTYPE,
    Delta,
    check_delta,
    check_nhwc,
    check_state,
    emit,
)
from deltajax.ops.config import SparsifyConfig, is_traced


class SparsifyState(NamedTuple):
    """``ref``: ``[N, H, W, C]`` float32, the last propagated input per pixel."""

    ref: jax.Array


class DensifyState(NamedTuple):
    """``out``: ``[N, H, W, C]`` float32, the accumulated dense output."""

    out: jax.Array


def dilate_mask(mask: jax.Array, dilation: int) -> jax.Array:
    """Grows a ``[N, H, W]`` bool mask by ``dilation`` pixels on every side."""
    if dilation == 0:
        return mask
    k = 2 * dilation + 1
    grown = lax.reduce_window(
        mask.astype(jnp.float32),
        0.0,
        lax.max,
        (1, k, k),
        (1, 1, 1),
        ((0, 0), (dilation, dilation), (dilation, dilation)),
    )
    return grown > 0


def sparsify_init(x: jax.Array) -> tuple[jax.Array, SparsifyState]:
    """First frame: passes ``x`` ``[N, H, W, C]`` through and remembers it."""
    check_nhwc("sparsify_init", "x", x)
    return x, SparsifyState(ref=x.astype(STATE_DTYPE))


def sparsify(
    state: SparsifyState, x: jax.Array, config: SparsifyConfig = SparsifyConfig()
) -> tuple[Delta, SparsifyState]:
    """Turns a dense frame ``[N, H, W, C]`` into a Delta against the reference.

    A pixel is active when ``max_c |x - ref| > config.threshold`` (after the
    optional dilation of the activity map); active pixels emit ``v = x - ref``
    rounded to ``x``'s dtype and set ``ref += v`` (``ref = x`` when ``v`` is exact:
    the reference is what was actually sent, so a rounding is sent on the next
    frame), inactive ones keep ``ref`` so slow drift accumulates.

    Example:
      >>> frame0 = jnp.zeros((1, 4, 4, 3)); frame1 = frame0.at[0, 1, 2].set(1.0)
      >>> _, s = sparsify_init(frame0)
      >>> d, s = sparsify(s, frame1)
      >>> int(d.mask.sum())
      1
    """
    check_nhwc("sparsify", "x", x)
    check_state("sparsify", "state.ref", state.ref, x.shape, "sparsify_init")
    reference = functools.partial(_sparsify_reference, config=config)
    native = functools.partial(_sparsify_native, config=config)
    values, mask, ref = dispatch(
        "deltajax_sparsify", reference, native, state.ref, x, native_ok=not is_traced(config.threshold)
    )
    return Delta(values, mask), SparsifyState(ref)


def sparsify_changed(
    state: SparsifyState, x: jax.Array, config: SparsifyConfig = SparsifyConfig()
) -> tuple[jax.Array, SparsifyState]:
    """Whether any pixel of the frame ``x`` ``[N, H, W, C]`` is active against the reference (a bool scalar), and
    the state ``sparsify`` leaves, without the delta itself: no values or mask are written.

    For a caller that reads only "did anything change" (a stream where every changed frame runs the plain
    model, ``Stepper.never_delta``): in pure JAX on every backend, so that XLA fuses the comparison, the
    reference's update and the reduction into one pass over the frame and the reference. A NaN compares false:
    it makes no pixel active (the caller runs a frame holding one densely).
    """
    check_nhwc("sparsify_changed", "x", x)
    check_state("sparsify_changed", "state.ref", state.ref, x.shape, "sparsify_init")
    _, mask, ref = _sparsify_reference(state.ref, x, config=config)
    return jnp.any(mask), SparsifyState(ref)


def _sparsify_reference(ref, x, *, config):
    x32 = x.astype(STATE_DTYPE)
    diff = x32 - ref
    active = jnp.max(jnp.abs(diff), axis=-1) > config.threshold
    mask = dilate_mask(active, config.dilation)
    m = mask[..., None]
    values, sent = emit(jnp.where(m, diff, 0.0), x.dtype)
    return values, mask, jnp.where(m, jnp.where(sent == diff, x32, ref + sent), ref)


def _sparsify_native(ref, x, *, config):
    pixels = x.shape[:-1]
    values, mask, ref, _ = jax.ffi.ffi_call(
        "deltajax_sparsify",
        (
            jax.ShapeDtypeStruct(x.shape, x.dtype),
            jax.ShapeDtypeStruct(pixels, jnp.bool_),
            jax.ShapeDtypeStruct(x.shape, STATE_DTYPE),
            jax.ShapeDtypeStruct(pixels, jnp.uint8),  # workspace: the activity map before dilation
        ),
        input_output_aliases={1: 2},
        vmap_method="broadcast_all",
    )(x, ref, threshold=np.float32(config.threshold), dilation=np.int32(config.dilation))
    return values, mask, ref


def densify_init(x: jax.Array) -> tuple[jax.Array, DensifyState]:
    """First frame: passes the dense ``x`` ``[N, H, W, C]`` through and accumulates it."""
    check_nhwc("densify_init", "x", x)
    return x, DensifyState(out=x.astype(STATE_DTYPE))


def densify(state: DensifyState, x: Delta) -> tuple[jax.Array, DensifyState]:
    """Adds the active updates of ``x`` to the accumulated output; returns it ``[N, H, W, C]``."""
    check_delta("densify", "x", x)
    check_state("densify", "state.out", state.out, x.shape, "densify_init")
    out = dispatch("deltajax_densify", _densify_reference, _densify_native, x.values, x.mask, state.out)
    return out.astype(x.dtype), DensifyState(out)


def _densify_reference(values, mask, out):
    return out + Delta(values, mask).masked_values(STATE_DTYPE)


def _densify_native(values, mask, out):
    return jax.ffi.ffi_call(
        "deltajax_densify",
        jax.ShapeDtypeStruct(out.shape, STATE_DTYPE),
        input_output_aliases={2: 0},
        vmap_method="broadcast_all",
    )(values, mask, out)
