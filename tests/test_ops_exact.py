"""Per-op exactness over >= 100 frames, every activation and truncation mode, and dtype handling."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from deltajax import ops
from tests.harness import moving_blobs, rel_error, run_dense, run_video
from tests.nets import ParamMaker

VIDEO = moving_blobs(101, 2, 12, 17, 3, seed=7)
W = ParamMaker(0).conv(3, 3, 3, 4)


def _sine(x):  # a generic element-wise function with no name
    return jnp.sin(x) + 0.5 * x


@pytest.mark.parametrize("name", [*(n for n in ops.ACTIVATION_NAMES if n != "prelu"), _sine])  # prelu: test_superres
def test_every_activation_is_exact_at_threshold_zero(name):
    def net(ctx, p, x):
        return ctx.act(ctx.conv(x, p), name)

    got, _ = run_video(net, W, VIDEO)
    want = run_dense(net, W, VIDEO)
    assert max(rel_error(got[t], want[t]) for t in range(len(VIDEO))) <= 1e-5


@pytest.mark.parametrize("mode", ["max", "l2", "rms", "none"])
def test_truncation_modes_exact_at_zero_and_bounded_above(mode):
    def net_with(threshold):
        def net(ctx, p, x):
            return ctx.act(ctx.conv(x, p), "relu", ops.Truncation(mode, threshold))

        return net

    want = np.asarray(run_dense(net_with(0.0), W, VIDEO))
    exact, _ = run_video(net_with(0.0), W, VIDEO)
    assert max(rel_error(exact[t], want[t]) for t in range(len(VIDEO))) <= 1e-5
    loose, _ = run_video(net_with(0.3), W, VIDEO)
    errors = [rel_error(loose[t], want[t]) for t in range(len(VIDEO))]
    assert max(errors) < 0.5
    assert max(errors[80:]) <= 2 * max(errors[10:30]) + 1e-3  # no drift


def test_truncated_pixels_keep_their_residual_until_it_matters():
    x0 = jnp.zeros((1, 1, 1, 2))
    _, state = ops.activation_init(x0, "identity")
    trunc = ops.Truncation("max", 0.5)
    small = ops.Delta(jnp.full((1, 1, 1, 2), 0.3), jnp.ones((1, 1, 1), bool))
    out, state = ops.activation(state, small, "identity", trunc)
    assert not bool(out.mask.any()) and float(state.sent[0, 0, 0, 0]) == 0.0  # nothing sent yet
    assert float(state.acc[0, 0, 0, 0]) == pytest.approx(0.3)
    out, state = ops.activation(state, small, "identity", trunc)  # 0.6 in total: now it passes
    assert bool(out.mask.all()) and float(out.values[0, 0, 0, 0]) == pytest.approx(0.6)
    assert float(state.sent[0, 0, 0, 0]) == pytest.approx(0.6) and float(state.acc[0, 0, 0, 0]) == pytest.approx(0.6)


def test_sparsify_threshold_and_dilation_by_hand():
    x0 = jnp.zeros((1, 5, 5, 1))
    _, state = ops.sparsify_init(x0)
    x1 = x0.at[0, 2, 2, 0].set(0.2).at[0, 0, 0, 0].set(0.05)
    d, state = ops.sparsify(state, x1, ops.SparsifyConfig(threshold=0.1, dilation=1))
    want = np.zeros((1, 5, 5), bool)
    want[0, 1:4, 1:4] = True
    np.testing.assert_array_equal(np.asarray(d.mask), want)
    assert float(state.ref[0, 0, 0, 0]) == 0.0  # below threshold: not propagated, drift kept against ref
    d, state = ops.sparsify(state, x1.at[0, 0, 0, 0].set(0.15), ops.SparsifyConfig(threshold=0.1))
    assert bool(d.mask[0, 0, 0]) and float(d.values[0, 0, 0, 0]) == pytest.approx(0.15)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_stream_keeps_float32_state_and_its_dtype(dtype):
    x0 = jnp.asarray(VIDEO[0], dtype)
    y, s = ops.sparsify_init(x0)
    assert y.dtype == dtype and s.ref.dtype == jnp.float32
    d, s = ops.sparsify(s, jnp.asarray(VIDEO[1], dtype))
    assert d.values.dtype == dtype
    h, a = ops.activation_init(ops.conv(y, W.astype(dtype)), "relu6")
    out, a = ops.activation(a, ops.conv(d, W.astype(dtype)), "relu6")
    assert out.values.dtype == dtype and a.acc.dtype == jnp.float32
