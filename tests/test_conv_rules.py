"""Convolution rules against jax.lax: hand cases and hypothesis over configurations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

from deltajax import ops

# Every test runs on the native kernels and on the pure-JAX reference (conftest.path).
pytestmark = pytest.mark.usefixtures("path")

DIMS = ("NHWC", "HWIO", "NHWC")
HIGHEST = lax.Precision.HIGHEST


def lax_conv(x, w, strides, padding, dilation, groups):
    return lax.conv_general_dilated(
        x,
        w,
        strides,
        padding,
        rhs_dilation=dilation,
        feature_group_count=groups,
        dimension_numbers=DIMS,
        precision=HIGHEST,
    )


def lax_conv_transpose(x, w, strides, padding, dilation):
    return lax.conv_transpose(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=DIMS, precision=HIGHEST)


def receptive_mask_oracle(mask, w_shape, conv_fn):
    """Output pixels that depend on an active input: a conv of the indicator with an all-ones kernel."""
    ones = jnp.ones((*w_shape[:2], 1, 1), jnp.float32)
    return conv_fn(mask[..., None].astype(jnp.float32), ones)[..., 0] > 0


def check_delta_rule(x0, x1, changed, w, conv_fn, delta_fn):
    """conv(x1) = conv(x0) + conv(delta) on the output mask, unchanged elsewhere; mask = receptive field."""
    d = ops.Delta(jnp.where(changed[..., None], x1 - x0, jnp.nan), changed)  # NaN: inactive values unread
    out = delta_fn(d)
    y0, y1 = conv_fn(x0, w), conv_fn(x1, w)
    m = np.asarray(out.mask)
    np.testing.assert_array_equal(m, np.asarray(receptive_mask_oracle(changed, w.shape, lambda a, k: conv_fn(a, k))))
    got = np.where(m[..., None], np.asarray(y0) + np.where(m[..., None], np.asarray(out.values), 0), np.asarray(y1))
    scale = max(float(jnp.max(jnp.abs(y1))), 1e-6)
    assert np.max(np.abs(got - np.asarray(y1))) <= 1e-5 * scale
    np.testing.assert_allclose(np.asarray(y0)[~m], np.asarray(y1)[~m], rtol=0, atol=1e-5 * scale)


def test_single_pixel_through_3x3_conv_marks_a_3x3_square():
    x0 = jnp.zeros((1, 7, 7, 1))
    x1 = x0.at[0, 3, 3, 0].set(2.0)
    w = jnp.arange(9.0).reshape(3, 3, 1, 1)
    _, s = ops.sparsify_init(x0)
    d, _ = ops.sparsify(s, x1)
    out = ops.conv(d, w)
    want = np.zeros((1, 7, 7), bool)
    want[0, 2:5, 2:5] = True
    np.testing.assert_array_equal(np.asarray(out.mask), want)
    # cross-correlation: output (3+i, 3+j) reads the input at (3, 3) through tap (1-i, 1-j)
    np.testing.assert_allclose(np.asarray(out.values[0, 2:5, 2:5, 0]), 2.0 * np.arange(9.0).reshape(3, 3)[::-1, ::-1])


def test_bias_only_on_the_first_frame():
    x = jnp.ones((1, 4, 4, 2))
    w = jnp.ones((1, 1, 2, 3))
    b = jnp.asarray([1.0, 2.0, 3.0])
    dense = ops.conv(x, w, b)
    np.testing.assert_allclose(np.asarray(dense[0, 0, 0]), [3.0, 4.0, 5.0])
    d = ops.conv(ops.Delta(jnp.zeros((1, 4, 4, 2)), jnp.ones((1, 4, 4), bool)), w, b)
    np.testing.assert_array_equal(np.asarray(d.values), 0.0)


@st.composite
def conv_configs(draw):
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    depthwise = draw(st.booleans())
    if depthwise:
        groups = cin = cout = draw(st.integers(1, 4))
    padding = draw(st.sampled_from(["SAME", "VALID", "explicit"]))
    h = draw(st.integers((kh - 1) * dh + 1, (kh - 1) * dh + 9))
    w = draw(st.integers((kw - 1) * dw + 1, (kw - 1) * dw + 9))
    if padding == "explicit":
        padding = (
            (draw(st.integers(0, 3)), draw(st.integers(0, 3))),
            (draw(st.integers(0, 3)), draw(st.integers(0, 3))),
        )
    n = draw(st.integers(1, 2))
    return dict(
        kh=kh,
        kw=kw,
        strides=(sh, sw),
        dilation=(dh, dw),
        groups=groups,
        cin=cin,
        cout=cout,
        padding=padding,
        shape=(n, h, w),
        seed=draw(st.integers(0, 2**16)),
    )


def random_pair(cfg, cin):
    rng = np.random.default_rng(cfg["seed"])
    n, h, w = cfg["shape"]
    x0 = rng.normal(size=(n, h, w, cin)).astype(np.float32)
    changed = rng.random((n, h, w)) < 0.15
    x1 = np.where(changed[..., None], rng.normal(size=x0.shape).astype(np.float32), x0)
    return jnp.asarray(x0), jnp.asarray(x1), jnp.asarray(changed), rng


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(conv_configs())
def test_conv_matches_lax_for_any_configuration(cfg):
    x0, x1, changed, rng = random_pair(cfg, cfg["cin"])
    w = jnp.asarray(rng.normal(size=(cfg["kh"], cfg["kw"], cfg["cin"] // cfg["groups"], cfg["cout"])), jnp.float32)
    kw = dict(strides=cfg["strides"], padding=cfg["padding"], dilation=cfg["dilation"], groups=cfg["groups"])

    def conv_fn(x, k):
        return lax_conv(x, k, cfg["strides"], cfg["padding"], cfg["dilation"], cfg["groups"] if k is w else 1)

    np.testing.assert_allclose(np.asarray(ops.conv(x0, w, **kw)), np.asarray(conv_fn(x0, w)), rtol=1e-6, atol=1e-5)
    check_delta_rule(x0, x1, changed, w, conv_fn, lambda d: ops.conv(d, w, **kw))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(conv_configs())
def test_conv_transpose_matches_lax_for_any_configuration(cfg):
    padding = cfg["padding"]
    x0, x1, changed, rng = random_pair(cfg, cfg["cin"])
    w = jnp.asarray(rng.normal(size=(cfg["kh"], cfg["kw"], cfg["cin"], cfg["cout"])), jnp.float32)
    kw = dict(strides=cfg["strides"], padding=padding, dilation=cfg["dilation"])

    def conv_fn(x, k):
        return lax_conv_transpose(x, k, cfg["strides"], padding, cfg["dilation"])

    np.testing.assert_allclose(
        np.asarray(ops.conv_transpose(x0, w, **kw)), np.asarray(conv_fn(x0, w)), rtol=1e-6, atol=1e-5
    )
    check_delta_rule(x0, x1, changed, w, conv_fn, lambda d: ops.conv_transpose(d, w, **kw))


@pytest.mark.parametrize("dtype, tol", [(jnp.bfloat16, 2e-2), (jnp.float16, 2e-3)])
def test_low_precision_conv_within_its_precision(dtype, tol):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 13, 8)).astype(np.float32)
    mask = rng.random((2, 9, 13)) < 0.3
    w = rng.normal(size=(3, 3, 8, 16)).astype(np.float32) / 5
    want = ops.conv(ops.Delta(jnp.asarray(x), jnp.asarray(mask)), jnp.asarray(w))
    got = ops.conv(ops.Delta(jnp.asarray(x, dtype), jnp.asarray(mask)), jnp.asarray(w, dtype))
    assert got.values.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got.mask), np.asarray(want.mask))
    m = np.asarray(want.mask)[..., None]
    err = np.abs(np.where(m, np.asarray(got.values, np.float32), 0) - np.where(m, np.asarray(want.values), 0)).max()
    assert err <= tol * np.abs(np.asarray(want.values)[np.broadcast_to(m, want.values.shape)]).max()


def test_jit_of_conv_on_deltas():
    w = jnp.ones((3, 3, 2, 2))
    d = ops.Delta(jnp.ones((1, 5, 5, 2)), jnp.zeros((1, 5, 5), bool).at[0, 2, 2].set(True))
    out = jax.jit(lambda d: ops.conv(d, w, strides=2))(d)
    assert out.values.shape == (1, 3, 3, 2) and int(out.mask.sum()) == 1
