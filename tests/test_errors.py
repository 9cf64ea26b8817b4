"""Bad inputs raise at trace time with messages naming the op, the argument, expected and got."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from deltajax import ops


def delta(shape=(1, 6, 8, 4), dtype=jnp.float32):
    return ops.Delta(jnp.zeros(shape, dtype), jnp.zeros(shape[:3], bool))


def test_wrong_rank():
    with pytest.raises(ValueError, match=r"sparsify_init: argument 'x' must be NHWC .* expected rank 4, got rank 3"):
        ops.sparsify_init(jnp.zeros((6, 8, 3)))
    with pytest.raises(ValueError, match=r"conv: argument 'x.values' must be NHWC .* got rank 2"):
        ops.conv(ops.Delta(jnp.zeros((6, 8)), jnp.zeros((6,), bool)), jnp.zeros((3, 3, 8, 4)))


def test_nchw_input_is_recognised():
    x = jnp.zeros((1, 3, 32, 32))  # NCHW, 3 channels
    with pytest.raises(ValueError, match=r"conv: argument 'x' has 32 channels .* expected 3 .*NCHW"):
        ops.conv(x, jnp.zeros((3, 3, 3, 8)))


def test_unsupported_dtype():
    with pytest.raises(TypeError, match=r"activation_init: argument 'x' has dtype int32, expected one of float32"):
        ops.activation_init(jnp.zeros((1, 2, 2, 1), jnp.int32))
    with pytest.raises(TypeError, match=r"sparsify_init: argument 'x' has dtype uint8"):
        ops.sparsify_init(jnp.zeros((1, 2, 2, 3), jnp.uint8))


def test_state_from_another_stream():
    _, state = ops.sparsify_init(jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(
        ValueError,
        match=r"sparsify: argument 'state.ref' belongs to a stream of shape \(1, 8, 8, 3\)"
        r" float32, but this frame needs shape \(1, 16, 16, 3\).*sparsify_init",
    ):
        ops.sparsify(state, jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match=r"sparsify_changed: argument 'state.ref' belongs to a stream of shape"):
        ops.sparsify_changed(state, jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match=r"sparsify_changed: argument 'x' must be NHWC"):
        ops.sparsify_changed(state, jnp.zeros((8, 8, 3)))
    _, state = ops.activation_init(jnp.zeros((1, 6, 8, 4)))
    bad = ops.ActivationState(state.acc.astype(jnp.float16), state.sent)
    with pytest.raises(
        ValueError, match=r"activation: argument 'state.acc' .* float16, but this frame needs .* float32"
    ):
        ops.activation(bad, delta())


def test_mask_of_the_wrong_shape_or_dtype():
    with pytest.raises(ValueError, match=r"densify: argument 'x.mask' must have shape \[N, H, W\] = \(1, 6, 8\), got"):
        _, s = ops.densify_init(jnp.zeros((1, 6, 8, 4)))
        ops.densify(s, ops.Delta(jnp.zeros((1, 6, 8, 4)), jnp.zeros((1, 6, 8, 4), bool)))
    with pytest.raises(TypeError, match=r"add: argument 'x.mask' must be bool, got float32"):
        ops.add(ops.Delta(jnp.zeros((1, 6, 8, 4)), jnp.zeros((1, 6, 8))), delta())


def test_dense_and_delta_mixed():
    with pytest.raises(TypeError, match=r"add: arguments must be all dense .* or all Deltas, got a mix"):
        ops.add(jnp.zeros((1, 6, 8, 4)), delta())
    with pytest.raises(TypeError, match=r"activation_init: argument 'x' is a Delta, expected a dense"):
        ops.activation_init(delta())
    with pytest.raises(TypeError, match=r"activation: argument 'x' must be a deltajax.ops.Delta"):
        _, s = ops.activation_init(jnp.zeros((1, 6, 8, 4)))
        ops.activation(s, jnp.zeros((1, 6, 8, 4)))


def test_bad_configuration():
    with pytest.raises(ValueError, match=r"Truncation: mode must be one of"):
        ops.Truncation("median")
    with pytest.raises(ValueError, match=r"SparsifyConfig: threshold must be >= 0"):
        ops.SparsifyConfig(-1.0)
    with pytest.raises(ValueError, match=r"Activation: unknown name 'relu7'"):
        ops.Activation("relu7")
    with pytest.raises(ValueError, match=r"conv: argument 'padding' must be 'SAME', 'VALID'"):
        ops.conv(delta(), jnp.zeros((3, 3, 4, 4)), padding="FULL")
    with pytest.raises(ValueError, match=r"conv: argument 'strides' must be a positive int or a pair"):
        ops.conv(delta(), jnp.zeros((3, 3, 4, 4)), strides=0)
    with pytest.raises(ValueError, match=r"upsample: argument 'method' must be one of"):
        ops.upsample(delta(), 2, "bicubic")
    with pytest.raises(ValueError, match=r"conv: argument 'bias' must have shape \(4,\), got \(3,\)"):
        ops.conv(jnp.zeros((1, 6, 8, 4)), jnp.zeros((3, 3, 4, 4)), jnp.zeros(3))


def test_shape_mismatch_between_operands():
    with pytest.raises(ValueError, match=r"add: arguments 'x' and 'y' must have the same shape"):
        ops.add(delta(), delta((1, 6, 8, 5)))
    with pytest.raises(ValueError, match=r"concat: argument 'xs\[1\]' has shape"):
        ops.concat([delta(), delta((1, 3, 8, 4))])
    _, s = ops.multiply_init(jnp.zeros((1, 6, 8, 4)), jnp.zeros((1, 1, 1, 4)))
    with pytest.raises(ValueError, match=r"binary: arguments 'x' .* and 'y' .* do not broadcast"):
        ops.multiply(s, delta(), delta((1, 1, 1, 3)))


def test_errors_are_raised_at_trace_time_under_jit():
    _, state = ops.sparsify_init(jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"sparsify: argument 'state.ref'"):
        jax.jit(ops.sparsify).lower(state, jnp.zeros((1, 4, 4, 3)))
