"""ops.conv_activation: the fused target against conv then activation, the unrounded float32 convolution result
that it accumulates in 16-bit streams, the composed path where a backend has no fused target, its errors, and the
transform's use of it."""

from __future__ import annotations

import re
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deltajax
from deltajax import _native, ops
from deltajax.video import _run_clip
from tests.flax_nets import MobileNetish
from tests.harness import moving_blobs, rel_error
from tests.test_native import assert_delta_close, assert_tree_close, both, rand_delta, rand_state

native = pytest.mark.skipif(
    _native.default_platform() not in _native.native_platforms(), reason="no native kernels for this backend"
)

# float32: rel <= 1e-5, the GPU kernels' bound for float32 arithmetic (3xTF32 convs); the CPU ones do better.
TOL = {jnp.dtype(jnp.float32): 1e-5, jnp.dtype(jnp.bfloat16): 2e-2}
CASES = {  # name: (N, H, W, C_in, C_out, k, groups, strides)
    "3x3": (2, 9, 13, 8, 16, 3, 1, 1),
    "1x1_wide": (1, 7, 11, 12, 40, 1, 1, 1),
    "1x1_narrow": (2, 6, 5, 5, 3, 1, 1, 1),
    "depthwise": (2, 10, 10, 24, 24, 3, 24, 1),
    "depthwise_5x5_strided": (1, 11, 9, 13, 13, 5, 13, 2),
    "stem_strided": (1, 12, 14, 3, 32, 3, 1, 2),
    "grouped": (1, 8, 9, 8, 12, 3, 4, 1),
    # CUDA runs the rule in the tensor-core convolution's epilogue; over several tiles of 64 output channels the
    # last block of each row tile of 128 pixels decides its pixels
    "1x1_expand": (2, 15, 17, 32, 144, 1, 1, 1),
    "3x3_two_channel_tiles": (1, 16, 20, 16, 80, 3, 1, 1),
}


def _case(name, dtype, seed=0, act="relu6"):
    n, h, w, cin, cout, k, groups, strides = CASES[name]
    rng = np.random.default_rng(seed)
    x = rand_delta(seed, (n, h, w, cin), dtype, p=0.35)
    size = jnp.asarray(rng.uniform(0, 1, (n, h, w, 1)) ** 2, dtype)  # small updates at many pixels
    x = ops.Delta(x.values * size, x.mask)
    kernel = jnp.asarray(rng.normal(size=(k, k, cin // groups, cout)) / np.sqrt(k * k * cin / groups), dtype)
    out = (n, -(-h // strides), -(-w // strides), cout)
    acc = rand_state(seed + 1, out, 2.0)  # sent: the activation of acc less some output not sent yet
    state = ops.ActivationState(acc, ops.Activation(act)(acc) + rand_state(seed + 2, out, 0.1))
    scale = jnp.asarray(rng.uniform(0.5, 1.5, cout), jnp.float32)
    return x, kernel, state, scale, dict(strides=strides, groups=groups, precision=jax.lax.Precision.HIGHEST)


def _unfused(x, kernel, state, scale, act, trunc, kw):
    conv = ops.conv(x, kernel, **kw)
    y, new = ops.activation(state, conv, act, trunc, scale=scale)
    return y, new, conv.mask


@native
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_equals_conv_then_activation(case, dtype):
    x, kernel, state, scale, kw = _case(case, dtype)
    trunc = ops.Truncation("max", 0.1)

    def fused(x, kernel, state, scale):
        return ops.conv_activation(state, x, kernel, "relu6", trunc, scale, **kw)

    got, ref = both(fused, x, kernel, state, scale)
    (want,) = both(lambda *a: _unfused(*a, "relu6", trunc, kw), x, kernel, state, scale)[1:]
    for result in (got, ref):
        assert_delta_close(result[0], want[0], TOL[jnp.dtype(dtype)])
        assert_tree_close(result[1], want[1], TOL[jnp.dtype(dtype)])
        np.testing.assert_array_equal(np.asarray(result[2]), np.asarray(want[2]))
    kept, active = int(got[0].mask.sum()), int(got[2].sum())
    assert 0 < kept <= active


@native
@pytest.mark.parametrize("case", ["depthwise", "1x1_expand"])
@pytest.mark.parametrize("act,mode", [("hard_swish", "l2"), ("silu", "rms"), ("relu", "none")])
def test_fused_other_activations_and_truncations(case, act, mode):
    x, kernel, state, _, kw = _case(case, jnp.float32, seed=3, act=act)
    # about 0.1 per channel: some pixels kept and some dropped
    trunc = ops.Truncation(mode, {"l2": 0.1 * np.sqrt(kernel.shape[3]), "rms": 0.1, "none": 0.0}[mode])
    got, ref = both(lambda x, k, s: ops.conv_activation(s, x, k, act, trunc, **kw), x, kernel, state)
    assert_delta_close(got[0], ref[0], TOL[jnp.dtype(jnp.float32)])
    assert_tree_close(got[1], ref[1], TOL[jnp.dtype(jnp.float32)])
    kept, active = int(got[0].mask.sum()), int(got[2].sum())
    assert 0 < kept <= active and (kept < active) == (trunc.mode != "none")


@native
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("case", ["3x3", "depthwise_5x5_strided", "1x1_expand"])
def test_fused_prelu_equals_conv_then_prelu(case, dtype):
    """Per-channel PReLU (super-resolution's activation) fuses too: its slopes are one more operand of its own
    target, deltajax_conv_prelu where a backend has it."""
    x, kernel, state, scale, kw = _case(case, dtype, seed=4, act="identity")
    slopes = jnp.asarray(np.random.default_rng(5).uniform(-0.5, 0.5, kernel.shape[3]), jnp.float32)
    state = ops.ActivationState(state.acc, jnp.where(state.acc >= 0, state.acc, slopes[None, None, None] * state.acc))
    trunc = ops.Truncation("max", 0.05)

    def fused(x, kernel, state, scale):
        return ops.conv_activation(state, x, kernel, "prelu", trunc, scale, slopes=slopes, **kw)

    def unfused(x, kernel, state, scale):
        conv = ops.conv(x, kernel, **kw)
        y, new = ops.activation(state, conv, "prelu", trunc, scale=scale, slopes=slopes)
        return y, new, conv.mask

    if "deltajax_conv_activation" in _native.targets(_native.default_platform()):
        assert _targets(fused, x, kernel, state, scale) == {"deltajax_conv_prelu": 1}
    got, ref = both(fused, x, kernel, state, scale)
    (want,) = both(unfused, x, kernel, state, scale)[1:]
    for result in (got, ref):
        assert_delta_close(result[0], want[0], TOL[jnp.dtype(dtype)])
        assert_tree_close(result[1], want[1], TOL[jnp.dtype(dtype)])
        np.testing.assert_array_equal(np.asarray(result[2]), np.asarray(want[2]))
    kept, active = int(got[0].mask.sum()), int(got[2].sum())
    assert 0 < kept < active


@pytest.mark.parametrize("case", ["3x3", "1x1_narrow", "depthwise", "grouped"])
def test_16bit_streams_accumulate_the_unrounded_convolution(case):
    """In a bfloat16 stream the activation's state takes the convolution's float32 result, not that result rounded
    to bfloat16 (whose error the state would otherwise accumulate frame after frame): the state's update equals
    the float32 convolution of the bfloat16 values to float32 precision, on the native target and the reference.
    bfloat16 rounding of the conv result would put it ~1e-3 off (relative)."""
    x, kernel, state, scale, kw = _case(case, jnp.bfloat16, seed=6)
    trunc = ops.Truncation("none")

    def fused(x, kernel, state, scale):
        return ops.conv_activation(state, x, kernel, "relu6", trunc, scale, **kw)

    wide = ops.conv(
        ops.Delta(x.values.astype(jnp.float32), x.mask), kernel.astype(jnp.float32), **kw
    )  # float32 HIGHEST: exact products of bfloat16 values
    m = np.asarray(wide.mask)[..., None]
    want = np.where(m, np.asarray(wide.values), 0) * np.asarray(scale)  # masked-out values are unspecified
    for got in both(fused, x, kernel, state, scale):
        update = np.where(m, np.asarray(got[1].acc) - np.asarray(state.acc), 0)
        np.testing.assert_array_equal(np.asarray(got[2]), np.asarray(wide.mask))
        assert np.abs(update - want).max() <= 2e-6 * np.abs(want).max() + 4e-6, np.abs(update - want).max()


def _targets(fn, *args) -> Counter:
    """The deltajax custom calls left in ``fn``'s optimised program (dead ones are gone)."""
    jax.clear_caches()  # trace afresh: the choice of kernels is made when tracing
    text = jax.jit(fn).lower(*args).compile().as_text()
    return Counter(re.findall(r'custom_call_target="(deltajax_\w+)"', text))


@native
def test_without_the_fused_kernel_the_native_conv_and_activation_run(monkeypatch):
    """What a backend with no fused target runs: the composed path, each op still native."""
    x, kernel, state, scale, kw = _case("3x3", jnp.float32)

    def fused(x, kernel, state, scale):
        return ops.conv_activation(state, x, kernel, "relu6", ops.Truncation("max", 0.1), scale, **kw)

    platform, original = _native.default_platform(), _native.targets
    targets = original(platform)
    if "deltajax_conv_activation" in targets:  # this backend fuses: hide its fused kernel
        assert _targets(fused, x, kernel, state, scale) == {"deltajax_conv_activation": 1}
        monkeypatch.setattr(
            _native, "targets", lambda p: targets - {"deltajax_conv_activation"} if p == platform else original(p)
        )
    assert _targets(fused, x, kernel, state, scale) == {"deltajax_conv": 1, "deltajax_activation": 1}
    composed, reference = both(fused, x, kernel, state, scale)
    assert_delta_close(composed[0], reference[0], TOL[jnp.dtype(jnp.float32)])
    assert_tree_close(composed[1], reference[1], TOL[jnp.dtype(jnp.float32)])


def test_errors_name_the_op_and_the_argument():
    x, kernel, state, scale, kw = _case("3x3", jnp.float32)
    small = ops.ActivationState(state.acc[:, :-1], state.sent[:, :-1])
    with pytest.raises(ValueError, match=r"conv_activation: .*'state.acc'"):
        ops.conv_activation(small, x, kernel, "relu6", **kw)
    with pytest.raises(ValueError, match=r"conv_activation: .*'scale'"):
        ops.conv_activation(state, x, kernel, "relu6", scale=scale[:-1], **kw)
    with pytest.raises(ValueError, match=r"conv_activation: argument 'x' has 8 channels"):
        ops.conv_activation(state, x, kernel[..., :5, :], "relu6", **kw)


def test_transform_fuses_each_conv_with_the_activation_it_alone_feeds():
    """Conv -> batch norm -> activation runs as one op; the conv's own call is dropped (also with stats); a conv
    followed by batch norm alone (a projection) stays a conv with the scale folded into its kernel. Exact at
    threshold 0."""
    model = MobileNetish()
    video = jnp.asarray(moving_blobs(6, 1, 64, 96, 3, seed=4))  # large enough for named activations
    variables = model.init(jax.random.key(0), video[0])
    stepper = deltajax.delta(model.apply)
    outs, stats = deltajax.run_clip(stepper, video, variables, with_stats=True)
    dense = jax.vmap(lambda f: model.apply(variables, f))(video)
    assert max(rel_error(outs[t], dense[t]) for t in range(len(video))) <= 1e-5
    calls = _targets(
        lambda v, w: _run_clip(v, (w,), None, model=stepper, keyframe_every=None, with_stats=True, mesh=None),
        video,
        variables,
    )
    kinds = stepper.layers(variables, video[0])
    convs = sum(1 for k in kinds.values() if k == "conv")
    acts = sum(1 for k in kinds.values() if k == "act")
    if "deltajax_conv_activation" in _native.targets(_native.default_platform()):
        assert 0 < calls["deltajax_conv_activation"] <= acts
        assert calls["deltajax_conv_activation"] + calls["deltajax_conv"] == convs  # no conv computed twice
    else:
        assert calls["deltajax_conv"] == convs
    assert calls["deltajax_affine"] == 0  # the projections' batch-norm scales are folded into their convs
    conv_stats = [s.active for name, s in stats.items() if kinds[name] == "conv"]
    assert all(float(a[0]) == 1.0 and float(a[1:].max()) <= 1.0 for a in conv_stats)
