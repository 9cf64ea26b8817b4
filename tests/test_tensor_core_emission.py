"""Emitters in the precision of their tensor-core consumers: float32 deltas sent as TF32, the rounding fed back.

A convolution on tensor cores (float32 at the default precision on a GPU) reads its float32 operands as TF32: 10
mantissa bits. Were a float32 delta sent in full, the consumer would accumulate a fresh rounding of it on every
frame, and its state would random-walk away from dense (on an H200, EfficientNet-Lite0's TF32 error grew 3.6x over
10 000 frames). An emitter told ``tensor_cores=True`` sends its deltas already rounded and feeds that rounding back
like any other, so the consumer multiplies exactly what was sent. The platform's bits come from
``ops._delta.TENSOR_CORE_MANTISSA_BITS`` (CUDA only in production); the fixture ``tf32_here`` gives the platform the
tests run on TF32 too, so that the CPU kernels and the reference are checked as well.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import deltajax
from deltajax import _native, backend, ops
from deltajax.ops import _delta
from deltajax.transform._jaxpr import flatten
from deltajax.transform._rules import feeds_tensor_cores

HIGHEST = lax.Precision.HIGHEST


@pytest.fixture
def tf32_here(monkeypatch):
    """Tensor cores of TF32 on the platform the tests run on (jit caches cleared around the test)."""
    monkeypatch.setitem(_delta.TENSOR_CORE_MANTISSA_BITS, _native.default_platform(), 10)
    jax.clear_caches()
    yield
    jax.clear_caches()


def tf32(x):
    return lax.reduce_precision(jnp.asarray(x, jnp.float32), exponent_bits=8, mantissa_bits=10)


def tf32_conv(x, w):
    """What a tensor core computes of a float32 convolution: operands read as TF32, products summed in float32."""
    dims = ("NHWC", "HWIO", "NHWC")
    return lax.conv_general_dilated(tf32(x), tf32(w), (1, 1), "SAME", dimension_numbers=dims, precision=HIGHEST)


def ping_pong_frames(frames: int, distinct: int = 40, shape=(1, 12, 12, 3), seed: int = 0) -> jax.Array:
    """``[frames, *shape]`` float32: ``distinct`` random frames played forward and back (every frame changes)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0, 1.0, shape) + rng.normal(0.0, 0.5, (distinct, *shape))
    period = np.concatenate([np.arange(distinct), np.arange(distinct - 2, 0, -1)])
    return jnp.asarray(base[np.resize(period, frames)], jnp.float32)


def chain_errors(frames, weights, tensor_cores: bool) -> np.ndarray:
    """Per-frame relative error against dense of sparsify -> (TF32 conv -> relu6) x 3 -> TF32 conv -> densify."""

    def dense(x):
        for w in weights[:-1]:
            x = jax.nn.relu6(tf32_conv(x, w))
        return tf32_conv(x, weights[-1])

    def init(x):
        d, s = ops.sparsify_init(x)
        states = [s]
        for w in weights[:-1]:
            y, a = ops.activation_init(tf32_conv(d, w), "relu6")
            states.append(a)
            d = y
        out = tf32_conv(d, weights[-1])
        return out, states

    def step(carry, x):
        out, states = carry
        d, s = ops.sparsify(states[0], x, tensor_cores=tensor_cores)
        new = [s]
        for w, a in zip(weights[:-1], states[1:], strict=True):
            c = ops.Delta(tf32_conv(d.masked_values(), w), jnp.ones(d.mask.shape, bool))
            d, a = ops.activation(a, c, "relu6", tensor_cores=tensor_cores)
            new.append(a)
        out = out + tf32_conv(d.masked_values(), weights[-1])
        want = dense(x)
        return (out, new), jnp.linalg.norm(out - want) / jnp.linalg.norm(want)

    @jax.jit
    def run(frames):
        out, states = init(frames[0])
        return lax.scan(step, (out, states), frames[1:])[1]

    return np.asarray(run(frames))


def growth(errors: np.ndarray) -> float:
    tenth = len(errors) // 10
    return float(errors[-tenth:].mean() / errors[:tenth].mean())


def test_a_tf32_consumer_does_not_drift(path, tf32_here):
    """Over 6000 frames the error of deltas sent as TF32 stays flat; sent in full float32 it grows (the drift)."""
    rng = np.random.default_rng(1)
    weights = [jnp.asarray(rng.normal(0, 0.3, (3, 3, cin, 16)), jnp.float32) for cin in (3, 16, 16, 16)]
    frames = ping_pong_frames(6000)
    rounded, full = chain_errors(frames, weights, True), chain_errors(frames, weights, False)
    assert growth(rounded) <= 1.2, (growth(rounded), rounded[:5], rounded[-5:])
    assert growth(full) >= 1.5, growth(full)  # what the rounding removes


EMITTERS = 4  # sparsify, activation, add_activation, conv_activation


def _emitters(tensor_cores: bool):
    """Three frames through sparsify, activation (relu6 with a scale), add_activation (relu) and conv_activation
    (relu6), all fed by sparsify: per frame and op, ``(Delta, state leaves...)`` (sparsify's ref; an activation's
    acc and sent)."""
    rng = np.random.default_rng(2)
    frames = jnp.asarray(np.cumsum(rng.normal(0, 1, (4, 1, 5, 6, 8)), axis=0), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 2.0, (8,)), jnp.float32)
    y = ops.Delta(jnp.asarray(rng.normal(0, 1, (1, 5, 6, 8)), jnp.float32), jnp.asarray(rng.random((1, 5, 6)) < 0.5))
    kernel = jnp.asarray(rng.normal(0, 0.3, (3, 3, 8, 8)), jnp.float32)

    @jax.jit
    def run(frames):
        _, s = ops.sparsify_init(frames[0])
        _, a = ops.activation_init(frames[0], "relu6")
        _, b = ops.activation_init(frames[0], "relu")
        _, c = ops.activation_init(ops.conv(frames[0], kernel, precision=HIGHEST), "relu6")
        out = []
        for x in frames[1:]:
            d, s = ops.sparsify(s, x, tensor_cores=tensor_cores)
            e, a = ops.activation(a, d, "relu6", scale=scale, tensor_cores=tensor_cores)
            f, b = ops.add_activation(b, d, y, "relu", tensor_cores=tensor_cores)
            g, c, _ = ops.conv_activation(c, d, kernel, "relu6", precision=HIGHEST, tensor_cores=tensor_cores)
            out += [(d, s.ref), (e, a.acc, a.sent), (f, b.acc, b.sent), (g, c.acc, c.sent)]
        return out

    return run(frames)


def test_emitted_float32_deltas_are_tf32_and_fed_back(path, tf32_here):
    """Every emitted value is a TF32 number, and an activation's sent state is exactly the sum of what it emitted."""
    out = _emitters(True)
    for delta, *_ in out:
        kept = np.asarray(delta.masked_values())
        np.testing.assert_array_equal(np.asarray(tf32(kept)), kept)
        assert np.abs(kept).max() > 0
    for k in (1, 2, 3):  # the activations: sent grows by exactly the emitted values, frame after frame
        steps = out[k::EMITTERS]
        for (_, _, sent0), (delta, _, sent1) in zip(steps, steps[1:], strict=False):
            np.testing.assert_array_equal(np.asarray(sent1), np.asarray(sent0 + delta.masked_values()))


@pytest.mark.skipif(
    _native.default_platform() not in _native.native_platforms(), reason="no native kernels for this backend"
)
def test_native_and_reference_round_the_same(tf32_here):
    """The kernels round as the reference does (to nearest even, the same feedback): equal but where the float32
    value before the rounding differs in its last bits (XLA may fuse a multiply-add that a kernel does not), which
    can move the rounded value by one TF32 step. The convolution's own sums may differ in order, so conv_activation
    is left out."""
    native = _emitters(True)
    jax.clear_caches()
    with backend.use_reference():
        reference = _emitters(True)
    jax.clear_caches()
    pairs = [(g, w) for i, (g, w) in enumerate(zip(native, reference, strict=True)) if i % EMITTERS != 3]
    tf32_step = dict(rtol=2.0**-10, atol=1e-6)
    for (got, *got_state), (want, *want_state) in pairs:
        np.testing.assert_array_equal(np.asarray(got.mask), np.asarray(want.mask))
        np.testing.assert_allclose(np.asarray(got.masked_values()), np.asarray(want.masked_values()), **tf32_step)
        for g, w in zip(got_state, want_state, strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), **tf32_step)


def test_without_tensor_cores_nothing_changes(tf32_here):
    """``tensor_cores=False`` (the default) emits float32 deltas in full: some are not TF32 numbers."""
    d = _emitters(False)[0][0]
    kept = np.asarray(d.masked_values())
    assert np.any(np.asarray(tf32(kept)) != kept)


def _conv_net(x, w):
    return jax.nn.relu(lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))


@pytest.mark.parametrize(
    ("precision", "dtype", "expected"),
    [("default", jnp.float32, True), ("highest", jnp.float32, False), ("default", jnp.bfloat16, False)],
)
def test_the_transform_rounds_where_the_model_runs_tensor_cores(precision, dtype, expected):
    """float32 convolutions below full precision make the model's emitters round; HIGHEST and bf16 do not."""
    x, w = jnp.zeros((1, 6, 6, 3), dtype), jnp.zeros((3, 3, 3, 4), dtype)
    with jax.default_matmul_precision(precision):
        program = flatten(jax.make_jaxpr(_conv_net)(x, w))
        assert feeds_tensor_cores(program) is expected


def test_a_stepper_at_the_default_precision_sends_tf32(tf32_here):
    """``deltajax.delta`` of a float32 model at the default precision sends TF32 deltas from its input sparsify:
    its reference becomes the last frame plus the TF32 rounding of the change (the frame itself where that is
    exact)."""
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.normal(0, 0.3, (3, 3, 3, 4)), jnp.float32)
    frames = jnp.asarray(rng.normal(0, 1, (2, 1, 6, 6, 3)), jnp.float32)
    stepper = deltajax.delta(lambda w, x: _conv_net(x, w))
    with jax.default_matmul_precision("default"):
        _, state = stepper.init(w, frames[0])
        _, state = stepper(state, w, frames[1])
    change = frames[1] - frames[0]
    sent = tf32(change)
    want = jnp.where(sent == change, frames[1], frames[0] + sent)
    assert np.any(np.asarray(sent != change))
    np.testing.assert_array_equal(np.asarray(state.layers["input"].ref), np.asarray(want))
