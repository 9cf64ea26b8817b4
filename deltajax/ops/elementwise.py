"""Element-wise non-linearities on deltas, with truncation (delta-semantics.md section 4).

State per layer: ``acc`` (all input received so far) and ``sent`` (the sum of
the outputs actually emitted, as rounded to the delta dtype), both float32
``[N, H, W, C]``. For an active pixel ``acc += d`` and ``y = f(acc) - sent``;
if ``y`` passes the truncation test it is emitted, rounded to the delta dtype
``v``, and ``sent += v``; else the pixel is dropped and ``sent`` waits. This is
the spec's ``acc``/``res`` rule (``acc`` here is its ``acc + res``) with error
feedback: a rounding or truncation of one frame is emitted on the next, so a
consumer's accumulated input equals ``f(acc)`` rounded once, never a sum of
independently rounded updates.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from deltajax.backend import dispatch
from deltajax.ops._delta import (
    STATE_DTYPE,
    Delta,
    check_delta,
    check_dtype,
    check_nhwc,
    check_state,
    check_vector,
    emit,
    per_channel,
)
from deltajax.ops.config import Truncation, is_traced


def _leaky_relu(x, negative_slope):
    return jnp.where(x >= 0, x, negative_slope * x)


_NAMED: dict[str, Callable] = {
    "relu": jax.nn.relu,
    "relu6": jax.nn.relu6,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "hard_swish": jax.nn.hard_swish,
    "hard_sigmoid": jax.nn.hard_sigmoid,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "tanh": jnp.tanh,
    "identity": lambda x: x,
}
ACTIVATION_NAMES = tuple(sorted([*_NAMED, "leaky_relu", "prelu"]))

# The native kernels' ActKind (csrc/common/params.h): an ABI, append only.
_ACT_KIND = {
    "identity": 0,
    "relu": 1,
    "relu6": 2,
    "leaky_relu": 3,
    "sigmoid": 4,
    "silu": 5,
    "swish": 5,
    "hard_swish": 6,
    "hard_sigmoid": 7,
    "gelu": 8,
    "gelu_tanh": 9,
    "tanh": 10,
    "prelu": 11,
}
# The target that takes prelu's slopes (after the inputs, before the state) for each target of an activation rule
# that has one; prelu elsewhere runs on the reference.
PRELU_TARGET = {"deltajax_activation": "deltajax_prelu", "deltajax_conv_activation": "deltajax_conv_prelu"}
# TruncMode of the native kernels.
_TRUNC_MODE = {"max": 0, "l2": 1, "rms": 2, "none": 3}


@dataclasses.dataclass(frozen=True)
class Activation:
    """An element-wise function, by name or as any callable (hashable).

    Attributes:
      fn: one of ``ACTIVATION_NAMES`` or a callable applied element-wise
        (must map each element independently: the generic rule).
      negative_slope: slope of ``leaky_relu`` for negative inputs.

    ``prelu`` (``x`` if ``x >= 0`` else ``slopes[c] * x``) takes its ``[C]``
    slopes as an array argument (of the ops and of ``__call__``), so they may
    be traced parameters.
    """

    fn: str | Callable = "relu"
    negative_slope: float = 0.01

    def __post_init__(self):
        if isinstance(self.fn, str) and self.fn not in ACTIVATION_NAMES:
            raise ValueError(f"Activation: unknown name {self.fn!r}, expected one of {ACTIVATION_NAMES} or a callable")
        if not isinstance(self.fn, str) and not callable(self.fn):
            raise TypeError(f"Activation: fn must be a name or a callable, got {type(self.fn).__name__}")

    @property
    def name(self) -> str:
        return self.fn if isinstance(self.fn, str) else getattr(self.fn, "__name__", "custom")

    def __call__(self, x: jax.Array, slopes: jax.Array | None = None) -> jax.Array:
        """``f(x)`` of ``[..., C]``; ``slopes``: prelu's ``[C]`` (and only prelu's)."""
        check_slopes("Activation", self, slopes, x.shape[-1])
        if self.fn == "leaky_relu":
            return _leaky_relu(x, self.negative_slope)
        if self.fn == "prelu":
            return _leaky_relu(x, jnp.broadcast_to(jnp.asarray(slopes, x.dtype), x.shape))
        if isinstance(self.fn, str):
            return _NAMED[self.fn](x)
        return self.fn(x)


def has_native_kernel(act: Activation) -> bool:
    """Whether the native kernels implement ``act`` (named activations; a callable runs on the reference)."""
    return isinstance(act.fn, str) and act.fn in _ACT_KIND


def check_slopes(op: str, act: Activation, slopes, channels: int) -> None:
    """``slopes`` must be a ``[channels]`` vector for prelu and None for every other activation."""
    if (act.fn == "prelu") != (slopes is not None):
        raise ValueError(
            f"{op}: argument 'slopes' must be given for 'prelu' and only for it, got activation {act.name!r} "
            f"with slopes {'absent' if slopes is None else 'given'}"
        )
    check_vector(op, "slopes", slopes, channels)


def as_activation(op: str, act) -> Activation:
    """Accepts an Activation, a name or a callable."""
    if isinstance(act, Activation):
        return act
    if isinstance(act, str) or callable(act):
        return Activation(act)
    raise TypeError(f"{op}: argument 'activation' must be an Activation, a name or a callable, got {act!r}")


class ActivationState(NamedTuple):
    """``acc``: accumulated input; ``sent``: accumulated emitted output. Both ``[N, H, W, C]`` float32."""

    acc: jax.Array
    sent: jax.Array


def passes_truncation(y: jax.Array, truncation: Truncation) -> jax.Array:
    """Per-pixel test ``[N, H, W]`` on an update ``y`` ``[N, H, W, C]``."""
    if truncation.mode == "none":
        return jnp.ones(y.shape[:-1], bool)
    if truncation.mode == "max":
        score = jnp.max(jnp.abs(y), axis=-1)
    elif truncation.mode == "l2":
        score = jnp.sqrt(jnp.sum(y * y, axis=-1))
    else:
        score = jnp.sqrt(jnp.mean(y * y, axis=-1))
    return score > truncation.threshold


def activation_init(
    x: jax.Array, activation="relu", slopes: jax.Array | None = None
) -> tuple[jax.Array, ActivationState]:
    """First frame: ``f(x)`` of a dense ``[N, H, W, C]`` input, and the state it leaves (``slopes``: prelu's
    ``[C]``)."""
    act = as_activation("activation_init", activation)
    check_nhwc("activation_init", "x", x)
    check_slopes("activation_init", act, slopes, x.shape[-1])
    acc = x.astype(STATE_DTYPE)
    y = act(acc, slopes).astype(x.dtype)
    return y, ActivationState(acc, y.astype(STATE_DTYPE))


def activation(
    state: ActivationState,
    x: Delta,
    activation="relu",
    truncation: Truncation = Truncation(),
    scale: jax.Array | None = None,
    slopes: jax.Array | None = None,
    out_dtype=None,
) -> tuple[Delta, ActivationState]:
    """Applies an element-wise non-linearity to a Delta.

    Args:
      state: from ``activation_init`` or the previous frame.
      x: the input Delta ``[N, H, W, C]``.
      activation: an Activation, a name (``'relu6'``) or a callable.
      truncation: which output updates are dropped into the residual.
      scale: optional ``[C]`` factor the input update is multiplied by first
        (a batch-norm scale between a convolution and its activation, fused:
        the same as ``activation(state, affine(x, scale), ...)`` without the
        pass over the scaled values and their rounding to ``x``'s dtype).
      slopes: ``[C]``, for ``prelu`` and only for it (may be traced).
      out_dtype: the dtype the output is emitted in (rounded, the rounding fed
        back); None: ``x``'s. A float32 ``x`` with a 16-bit ``out_dtype`` is a
        wide input: ``ops.conv_activation``'s unrounded convolution result.

    Returns:
      The output Delta (mask: active input pixels that passed truncation)
      and the new state.
    """
    act = as_activation("activation", activation)
    check_delta("activation", "x", x)
    check_state("activation", "state.acc", state.acc, x.shape, "activation_init")
    check_state("activation", "state.sent", state.sent, x.shape, "activation_init")
    check_vector("activation", "scale", scale, x.shape[-1])
    check_slopes("activation", act, slopes, x.shape[-1])
    scale = jnp.ones(x.shape[-1:], jnp.float32) if scale is None else jnp.asarray(scale, jnp.float32)
    out_dtype = x.dtype if out_dtype is None else jnp.dtype(out_dtype)
    check_dtype("activation", "out_dtype", jax.ShapeDtypeStruct((), out_dtype))
    values, keep, acc, sent = activation_dispatch(
        "deltajax_activation",
        act,
        truncation,
        (x.values, x.mask, scale),
        (state.acc, state.sent),
        slopes,
        out_dtype=out_dtype,
    )
    return Delta(values, keep), ActivationState(acc, sent)


def activation_dispatch(
    target: str, act: Activation, truncation: Truncation, inputs, state, slopes=None, out_dtype=None
):
    """The activation rule on ``inputs``: ``(values, mask, scale)``, or for ``deltajax_add_activation`` two
    ``(values, mask)`` pairs added first; ``slopes``: prelu's ``[C]`` (checked by the caller); the output in
    ``out_dtype`` (None: the values'). Native for named activations, the reference for callables and for an output
    dtype other than the input's (the native targets emit in their input's dtype)."""
    out_dtype = inputs[0].dtype if out_dtype is None else jnp.dtype(out_dtype)
    if slopes is not None:  # the prelu targets take the slopes after the inputs
        inputs = (*inputs, jnp.asarray(slopes, jnp.float32))
    reference = functools.partial(_activation_reference, act=act, truncation=truncation, out_dtype=out_dtype)
    native_ok = has_native_kernel(act) and not is_traced(truncation.threshold) and out_dtype == inputs[0].dtype
    if slopes is not None:
        native_ok = native_ok and target in PRELU_TARGET
        target = PRELU_TARGET.get(target, target)
    native = functools.partial(_activation_native, target=target, act=act, truncation=truncation)
    return dispatch(target, reference, native, *inputs, *state, native_ok=native_ok)


def _activation_reference(*args, act: Activation, truncation: Truncation, out_dtype):
    *inputs, acc, sent = args
    slopes = inputs.pop() if act.fn == "prelu" else None
    if len(inputs) == 4:  # add fused with the activation: the float32 sum, never rounded before it accumulates
        xv, xm, yv, ym = inputs
        update = Delta(xv, xm).masked_values(STATE_DTYPE) + Delta(yv, ym).masked_values(STATE_DTYPE)
        mask = xm | ym
    else:
        xv, mask, scale = inputs
        update = Delta(xv, mask).masked_values(STATE_DTYPE) * per_channel(scale, xv.ndim)
    m = mask[..., None]
    new_acc = jnp.where(m, acc + update, acc)
    y = act(new_acc, slopes) - sent
    keep = mask & passes_truncation(y, truncation)
    values, emitted = emit(jnp.where(keep[..., None], y, 0.0), out_dtype)
    # error feedback: what was sent so far plus exactly what is emitted now
    return values, keep, new_acc, jnp.where(keep[..., None], sent + emitted, sent)


def _activation_native(*args, target: str, act: Activation, truncation: Truncation):
    values = args[0]
    n_in = len(args)
    return jax.ffi.ffi_call(
        target,
        (
            jax.ShapeDtypeStruct(values.shape, values.dtype),
            jax.ShapeDtypeStruct(values.shape[:-1], jnp.bool_),
            jax.ShapeDtypeStruct(values.shape, STATE_DTYPE),
            jax.ShapeDtypeStruct(values.shape, STATE_DTYPE),
        ),
        input_output_aliases={n_in - 2: 2, n_in - 1: 3},
        vmap_method="broadcast_all",
    )(*args, **native_activation_attrs(act, truncation))


def native_activation_attrs(act: Activation, truncation: Truncation) -> dict:
    """The FFI attributes of the native activation targets (``act`` named)."""
    return dict(
        act=np.int32(_ACT_KIND[act.fn]),
        negative_slope=np.float32(act.negative_slope),
        truncation=np.int32(_TRUNC_MODE[truncation.mode]),
        threshold=np.float32(truncation.threshold),
    )
