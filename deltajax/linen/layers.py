"""Delta layers mirroring flax.linen: same names, attributes and parameter shapes, NHWC.

Each takes a dense ``[N, H, W, C]`` array on the first frame of a stream and a
``deltajax.ops.Delta`` on later frames. Parameters (``kernel``, ``bias``,
``scale``, batch-norm ``mean``/``var`` in ``batch_stats``) are named and shaped
like flax.linen's, so the variables of a plain Flax model load unchanged.
Stateful layers keep their state in the 'delta_state' collection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from deltajax import ops
from deltajax.linen._stream import start_or_step, stateful
from deltajax.ops import Delta, SparsifyConfig, Truncation

Initializer = Callable[..., jax.Array]


def _channels(x) -> int:
    return (x.values if isinstance(x, Delta) else x).shape[-1]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class Sparsify(nn.Module):
    """Dense frame ``[N, H, W, C]`` -> the frame itself (start) or a Delta against the last propagated input."""

    threshold: float = 0.0
    dilation: int = 0

    @nn.compact
    def __call__(self, x: jax.Array):
        cfg = SparsifyConfig(self.threshold, self.dilation)
        return start_or_step(self, lambda: ops.sparsify_init(x), lambda s: ops.sparsify(s, x, cfg))


class Densify(nn.Module):
    """Delta -> the accumulated dense ``[N, H, W, C]`` output."""

    @nn.compact
    def __call__(self, x):
        return stateful(self, x, ops.densify_init, ops.densify)


class Conv(nn.Module):
    """``flax.linen.Conv`` on dense frames and Deltas (kernel ``[kh, kw, C_in / groups, features]``)."""

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: str | int | Sequence = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        groups = self.feature_group_count
        shape = (*_pair(self.kernel_size), _channels(x) // groups, self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        return ops.conv(
            x, kernel, bias, strides=self.strides, padding=self.padding, dilation=self.kernel_dilation, groups=groups
        )


class ConvTranspose(nn.Module):
    """``flax.linen.ConvTranspose`` (kernel ``[kh, kw, C_in, features]``, not flipped)."""

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: str | Sequence = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (*_pair(self.kernel_size), _channels(x), self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        return ops.conv_transpose(
            x, kernel, bias, strides=self.strides, padding=self.padding, dilation=self.kernel_dilation
        )


class Dense(nn.Module):
    """``flax.linen.Dense`` over the channel axis (kernel ``[C_in, features]``)."""

    features: int
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (_channels(x), self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        return ops.dense(x, kernel, bias)


class BatchNorm(nn.Module):
    """Inference ``flax.linen.BatchNorm``: ``scale``/``bias`` params, ``mean``/``var`` in 'batch_stats'."""

    use_running_average: bool = True
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        if not self.use_running_average:
            raise ValueError("BatchNorm: argument 'use_running_average' must be True (delta inference), got False")
        c = _channels(x)
        mean = self.variable("batch_stats", "mean", jnp.zeros, (c,)).value
        var = self.variable("batch_stats", "var", jnp.ones, (c,)).value
        scale = self.param("scale", nn.initializers.ones_init(), (c,)) if self.use_scale else jnp.ones((c,))
        bias = self.param("bias", nn.initializers.zeros_init(), (c,)) if self.use_bias else jnp.zeros((c,))
        return ops.batch_norm(x, scale, bias, mean, var, self.epsilon)


class Activation(nn.Module):
    """An element-wise non-linearity (a name of ``deltajax.ops.ACTIVATION_NAMES`` or a callable), with truncation."""

    fn: str | Callable = "relu"
    truncation: Truncation = Truncation()

    @nn.compact
    def __call__(self, x):
        return stateful(
            self,
            x,
            lambda d: ops.activation_init(d, self.fn),
            lambda s, d: ops.activation(s, d, self.fn, self.truncation),
        )


class Add(nn.Module):
    """``x + y`` (a residual); with ``activation`` fused as ``f(x + y)``, keeping the activation state."""

    activation: str | Callable | None = None
    truncation: Truncation = Truncation()

    @nn.compact
    def __call__(self, x, y):
        if self.activation is None:
            return ops.add(x, y)
        return stateful(
            self,
            x,
            lambda a: ops.add_activation_init(a, y, self.activation),
            lambda s, a: ops.add_activation(s, a, y, self.activation, self.truncation),
        )


class Concat(nn.Module):
    """Concatenation along channels."""

    @nn.compact
    def __call__(self, *xs):
        return ops.concat(xs)


class Multiply(nn.Module):
    """``x * y`` of two Deltas (``y`` may be ``[N, 1, 1, C]``, a squeeze-excite gate): the binary rule."""

    @nn.compact
    def __call__(self, x, y):
        return stateful(self, x, lambda a: ops.multiply_init(a, y), lambda s, a: ops.multiply(s, a, y))


class Upsample(nn.Module):
    """Integer upsampling, 'nearest' or 'bilinear' (as ``jax.image.resize``)."""

    factor: int | Sequence[int] = 2
    method: str = "nearest"

    @nn.compact
    def __call__(self, x):
        return ops.upsample(x, self.factor, self.method)


class MaxPool(nn.Module):
    """``flax.linen.max_pool`` as a layer (stateful on Deltas)."""

    window_shape: int | Sequence[int]
    strides: int | Sequence[int] | None = None
    padding: str | Sequence = "VALID"

    @nn.compact
    def __call__(self, x):
        args = (self.window_shape, self.strides, self.padding)
        return stateful(self, x, lambda a: ops.max_pool_init(a, *args), lambda s, a: ops.max_pool(s, a, *args))


class AvgPool(nn.Module):
    """``flax.linen.avg_pool`` as a layer (linear, stateless)."""

    window_shape: int | Sequence[int]
    strides: int | Sequence[int] | None = None
    padding: str | Sequence = "VALID"

    @nn.compact
    def __call__(self, x):
        return ops.avg_pool(x, self.window_shape, self.strides, self.padding)


class GlobalAvgPool(nn.Module):
    """Mean over H, W -> dense ``[N, C]`` (the rest of the network runs densely)."""

    @nn.compact
    def __call__(self, x):
        return stateful(self, x, ops.global_avg_pool_init, ops.global_avg_pool)
