"""The transform recognises named activations (native kernels) and keeps other functions as callables."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax import lax

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


@pytest.mark.parametrize("act", [jax.nn.relu6, jax.nn.hard_swish, jax.nn.silu])
def test_activation_after_batch_norm_is_named_and_exact(act):
    """conv -> per-channel scale and offset -> activation: the activation starts after the affine part."""
    import numpy as np

    import deltajax
    from deltajax import _native
    from tests.harness import moving_blobs, rel_error

    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 16)), jnp.float32)
    scale, offset = (jnp.asarray(rng.normal(1, 0.3, (1, 1, 1, 16)), jnp.float32) for _ in range(2))

    def net(params, x):
        y = lax.conv_general_dilated(x, params[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return act(y * params[1] + params[2])

    video = jnp.asarray(moving_blobs(6, 1, 16, 24, 3, seed=2))  # frames >= the probe of named_activation
    params = (kernel, scale, offset)
    stepper = deltajax.delta(net)
    _, state = stepper.init(params, video[0])
    if "cpu" in _native.native_platforms():
        hlo = jax.jit(stepper).lower(state, params, video[1]).as_text()
        assert "deltajax_activation" in hlo
    outs = deltajax.run_clip(stepper, video, params)
    for t in range(video.shape[0]):
        assert rel_error(outs[t], net(params, video[t])) <= 1e-5


def test_activation_reading_the_conv_output_another_way_is_exact():
    """relu6(bn) * relu6(bn + y): one non-linearity reads the conv output y besides its batch-norm output, so the
    activation starts at y (a callable) and stays exact."""
    import numpy as np

    import deltajax
    from tests.harness import moving_blobs, rel_error

    rng = np.random.default_rng(1)
    kernel = jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 8)), jnp.float32)
    scale, offset = (jnp.asarray(rng.normal(1, 0.3, (1, 1, 1, 8)), jnp.float32) for _ in range(2))

    def net(params, x):
        y = lax.conv_general_dilated(x, params[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        bn = y * params[1] + params[2]
        return jax.nn.relu6(bn) * jax.nn.relu6(bn + y)

    video = jnp.asarray(moving_blobs(6, 1, 16, 24, 3, seed=3))
    params = (kernel, scale, offset)
    outs = deltajax.run_clip(deltajax.delta(net), video, params)
    for t in range(video.shape[0]):
        assert rel_error(outs[t], net(params, video[t])) <= 1e-5


def test_squeeze_excite_gate_runs_on_the_native_binary_kernel():
    """x * sigmoid(mean(x) @ w) per stream: the product of two frame values is ops.multiply (native), exact."""
    import numpy as np

    import deltajax
    from deltajax import _native
    from tests.harness import moving_blobs, rel_error

    rng = np.random.default_rng(2)
    kernel = jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 8)), jnp.float32)
    squeeze = jnp.asarray(rng.normal(0, 0.5, (8, 8)), jnp.float32)

    def net(params, x):
        y = jax.nn.relu(
            lax.conv_general_dilated(x, params[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        )
        gate = jax.nn.sigmoid(jnp.mean(y, axis=(1, 2), keepdims=True) @ params[1])
        return y * gate

    video = jnp.asarray(moving_blobs(6, 2, 16, 24, 3, seed=5))
    params = (kernel, squeeze)
    stepper = deltajax.delta(net)
    _, state = stepper.init(params, video[0])
    if "cpu" in _native.native_platforms():
        assert "deltajax_binary" in jax.jit(stepper).lower(state, params, video[1]).as_text()
    outs = deltajax.run_clip(stepper, video, params)
    for t in range(video.shape[0]):
        assert rel_error(outs[t], net(params, video[t])) <= 1e-5
