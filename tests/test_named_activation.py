"""The transform recognises named activations (native kernels) and keeps other functions as callables."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import deltajax
from deltajax import _native
from deltajax.transform._rules import named_activation
from tests.harness import moving_blobs, rel_error

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
    rows = jnp.arange(8.0).reshape(1, 8, 1, 1)
    assert named_activation(lambda x: jax.nn.relu(x) * rows, SHAPE, jnp.float32) is None  # per row of pixels

    @jax.jit
    def traced(s):  # a parameter that is a tracer cannot be probed
        return named_activation(lambda x: jax.nn.relu(x) * s, SHAPE, jnp.float32) is None

    assert traced(1.0)


def test_another_layer_shape_evaluates_the_same_probe_programs():
    """An activation whose constants are single numbers is probed along the last axis alone, so a layer of another
    shape compiles nothing new (probed at each layer's own shape, EfficientNet-Lite0's first delta program in a
    process spent 2.6 s in such small compiles)."""
    assert named_activation(jax.nn.relu6, SHAPE, jnp.float32).fn == "relu6"
    compiles = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        act = named_activation(jax.nn.relu6, (2, 24, 40, 48), jnp.float32)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert act.fn == "relu6" and not compiles


# -- whole delta programs: conv -> (batch norm) -> non-linearity ---------------------------------------------------
def _conv3x3(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _params(seed, channels, *shapes):
    """A 3x3 kernel from 3 to ``channels`` channels, then one array per shape, from one generator."""
    rng = np.random.default_rng(seed)
    kernel = jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, channels)), jnp.float32)
    return (kernel, *(jnp.asarray(rng.normal(1, 0.3, shape), jnp.float32) for shape in shapes))


def _check_exact_and_native(net, params, video, target=None):
    """Every frame of the delta program equals ``net`` (<= 1e-5); with ``target`` (a regular expression), its
    step calls such a kernel where CPU kernels are built. Frames have >= the probe size of named_activation."""
    stepper = deltajax.delta(net)
    if target is not None and "cpu" in _native.native_platforms():
        _, state = stepper.init(params, video[0])
        assert re.search(target, jax.jit(stepper).lower(state, params, video[1]).as_text())
    outs = deltajax.run_clip(stepper, video, params)
    for t in range(video.shape[0]):
        assert rel_error(outs[t], net(params, video[t])) <= 1e-5


@pytest.mark.parametrize("act", [jax.nn.relu6, jax.nn.hard_swish, jax.nn.silu])
def test_activation_after_batch_norm_is_named_and_exact(act):
    """conv -> per-channel scale and offset -> activation: the activation starts after the affine part."""

    def net(params, x):
        return act(_conv3x3(x, params[0]) * params[1] + params[2])

    params = _params(0, 16, (1, 1, 1, 16), (1, 1, 1, 16))
    video = jnp.asarray(moving_blobs(6, 1, 16, 24, 3, seed=2))
    _check_exact_and_native(net, params, video, "deltajax_(conv_)?activation")  # fused with the conv where it can


def test_activation_reading_the_conv_output_another_way_is_exact():
    """relu6(bn) * relu6(bn + y): one non-linearity reads the conv output y besides its batch-norm output, so the
    activation starts at y (a callable) and stays exact."""

    def net(params, x):
        y = _conv3x3(x, params[0])
        bn = y * params[1] + params[2]
        return jax.nn.relu6(bn) * jax.nn.relu6(bn + y)

    params = _params(1, 8, (1, 1, 1, 8), (1, 1, 1, 8))
    _check_exact_and_native(net, params, jnp.asarray(moving_blobs(6, 1, 16, 24, 3, seed=3)))


def test_squeeze_excite_gate_runs_on_the_native_binary_kernel():
    """x * sigmoid(mean(x) @ w) per stream: the product of two frame values is ops.multiply (native), exact."""

    def net(params, x):
        y = jax.nn.relu(_conv3x3(x, params[0]))
        return y * jax.nn.sigmoid(jnp.mean(y, axis=(1, 2), keepdims=True) @ params[1])

    params = _params(2, 8, (8, 8))
    _check_exact_and_native(net, params, jnp.asarray(moving_blobs(6, 2, 16, 24, 3, seed=5)), "deltajax_binary")
