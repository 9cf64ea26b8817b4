"""The transform recognises named activations (native kernels) and keeps other functions as callables."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from deltajax.transform._rules import named_activation

SHAPE = (1, 8, 16, 32)


@pytest.mark.parametrize(
    "fn, name",
    [
        (jax.nn.relu6, "relu6"),
        (lambda x: jnp.clip(x, 0.0, 6.0), "relu6"),
        (jax.nn.relu, "relu"),
        (jax.nn.silu, "silu"),
        (jax.nn.hard_swish, "hard_swish"),
        (jax.nn.sigmoid, "sigmoid"),
        (jnp.tanh, "tanh"),
        (lambda x: jax.nn.gelu(x, approximate=False), "gelu"),
        (lambda x: jax.nn.gelu(x, approximate=True), "gelu_tanh"),
    ],
)
def test_named_functions_are_recognised(fn, name):
    act = named_activation(fn, SHAPE, jnp.float32)
    assert act is not None and act.fn == name


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_16_bit_layers_are_recognised_within_their_precision(dtype):
    act = named_activation(lambda x: jax.nn.relu6(x.astype(dtype)), SHAPE, dtype)
    assert act is not None and act.fn == "relu6"
    assert named_activation(lambda x: jnp.sin(x.astype(dtype)), SHAPE, dtype) is None


def test_leaky_relu_keeps_its_slope():
    act = named_activation(lambda x: jax.nn.leaky_relu(x, 0.2), SHAPE, jnp.float32)
    assert act.fn == "leaky_relu" and act.negative_slope == pytest.approx(0.2)


def test_other_functions_stay_callables():
    scale = jnp.arange(32.0)
    assert named_activation(jnp.sin, SHAPE, jnp.float32) is None
    assert named_activation(lambda x: jax.nn.relu(x) * scale, SHAPE, jnp.float32) is None  # per-channel

    @jax.jit
    def traced(s):  # a parameter that is a tracer cannot be probed
        return named_activation(lambda x: jax.nn.relu(x) * s, SHAPE, jnp.float32) is None

    assert traced(1.0)
