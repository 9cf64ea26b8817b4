"""deltajax.delta: unmodified Flax models and plain JAX functions as delta programs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import deltajax
from deltajax import stats as dstats
from tests.flax_nets import MODELS, init_model
from tests.harness import moving_blobs, rel_error

FRAMES = 101


@pytest.fixture(scope="module")
def video():
    return jnp.asarray(moving_blobs(FRAMES, 2, 20, 28, 3, seed=4))


def _dense(fn, video, *args):
    return jax.jit(jax.vmap(lambda x: fn(*args, x)))(video)


def _errors(got, want) -> np.ndarray:
    return np.array([rel_error(g, w) for g, w in zip(got, want, strict=True)])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_flax_model_is_exact_at_every_frame(name, video):
    model, variables = init_model(name, video[0])
    stepper = deltajax.delta(model.apply)
    got, stats = deltajax.run_clip(stepper, video, variables, with_stats=True)
    errors = _errors(got, _dense(model.apply, video, variables))
    assert errors.max() <= 1e-4, f"worst frame {errors.argmax()}: {errors.max():.2e}"
    assert dstats.fallback_layers(stats) == []
    assert dstats.mac_ratio(stats) < 1.0


def test_jitted_step_with_donated_state_is_exact(video):
    model, variables = init_model("se", video[0])
    stepper = deltajax.delta(model.apply)
    step = jax.jit(stepper, donate_argnums=0)
    out, state = jax.jit(stepper.init)(variables, video[0])
    for t in range(1, 6):
        out, state = step(state, variables, video[t])
        assert rel_error(out, model.apply(variables, video[t])) <= 1e-4


def test_layer_names_are_flax_module_paths(video):
    model, variables = init_model("resnet", video[0])
    layers = deltajax.delta(model.apply).layers(variables, video[0])
    assert layers["input"] == "sparsify"
    assert layers["ResNetish/BasicBlock_0/Conv_0/conv"] == "conv"
    assert layers["ResNetish/max_pool"] == "max_pool"
    assert "act" in {layers[n] for n in layers if n.startswith("ResNetish/BasicBlock_1/")}


def test_threshold_error_bounded_without_drift_and_saves_macs():
    model, variables = init_model("mobilenet", jnp.zeros((1, 20, 28, 3)))
    video = moving_blobs(201, 1, 20, 28, 3, seed=5)
    video = jnp.asarray(video + np.random.default_rng(0).normal(0, 0.01, video.shape).astype(np.float32))
    act = "MobileNetish/InvertedResidual_1/relu6/act"
    cfg = deltajax.DeltaConfig(
        threshold=0.05, truncation=deltajax.Truncation("max", 0.02), layers={act: deltajax.Truncation("max", 0.05)}
    )
    got, stats = deltajax.run_clip(deltajax.delta(model.apply, config=cfg), video, variables, with_stats=True)
    errors = _errors(got, _dense(model.apply, video, variables))
    early, late = errors[20:40].max(), errors[180:201].max()
    assert errors.max() < 0.2, errors.max()
    assert late <= 2.0 * early + 1e-3, (early, late)
    assert dstats.mac_ratio(stats) < 0.6
    assert float(stats["input"].active[1:].mean()) < 0.2
    assert "multiply-adds done / dense" in dstats.summary(stats)


def _sorting_net(w, x):
    h = jax.nn.relu(lax.conv_general_dilated(x, w[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
    h = jnp.sort(h, axis=1) + jnp.cumsum(h, axis=2)
    return jnp.tanh(lax.conv_general_dilated(h, w[1], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))


def test_primitive_without_rule_falls_back_exactly(video):
    rng = np.random.default_rng(0)
    w = [jnp.asarray(rng.normal(0, 0.3, s), jnp.float32) for s in [(3, 3, 3, 4), (3, 3, 4, 4)]]
    stepper = deltajax.delta(_sorting_net)
    got, stats = deltajax.run_clip(stepper, video[:30], w, with_stats=True)
    errors = _errors(got, _dense(_sorting_net, video[:30], w))
    assert errors.max() <= 1e-4, errors.max()
    fallbacks = dstats.fallback_layers(stats)
    assert any(name.endswith("sort") for name in fallbacks), fallbacks
    assert any(name.endswith("cumsum") for name in fallbacks), fallbacks
    assert stepper.layers(w, video[0])[fallbacks[0]].startswith("fallback:")


def _conv_zoo(p, x):
    """Every conv_general_dilated parameter: groups, dilations, asymmetric pads, NCHW/OIHW, transposed."""
    nhwc = ("NHWC", "HWIO", "NHWC")
    h = lax.conv_general_dilated(x, p["a"], (2, 1), ((0, 2), (1, 0)), rhs_dilation=(1, 2), dimension_numbers=nhwc)
    h = jax.nn.gelu(h, approximate=False)
    h = lax.conv_general_dilated(h, p["dw"], (1, 1), "SAME", feature_group_count=4, dimension_numbers=nhwc)
    h = jnp.clip(h, -1.0, 2.0) * 3.0 - 0.5
    t = lax.conv_transpose(h, p["t"], (2, 2), "SAME", dimension_numbers=nhwc)
    c = jnp.transpose(t, (0, 3, 1, 2))
    c = lax.conv_general_dilated(c, p["oihw"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW"))
    c = jnp.transpose(c, (0, 2, 3, 1))
    s = lax.reduce_window(c, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
    return jax.nn.sigmoid(s) * jnp.maximum(s, 0.1) + jnp.tanh(jnp.einsum("nhwc,cd->nhwd", s, p["mix"])) * s


def test_conv_parameters_and_layouts_are_exact(video):
    rng = np.random.default_rng(1)
    shapes = {"a": (3, 2, 3, 4), "dw": (3, 3, 1, 4), "t": (2, 2, 4, 5), "oihw": (3, 5, 3, 3), "mix": (3, 3)}
    p = {k: jnp.asarray(rng.normal(0, 0.5, s), jnp.float32) for k, s in shapes.items()}
    stepper = deltajax.delta(_conv_zoo)
    got, stats = deltajax.run_clip(stepper, video[:20], p, with_stats=True)
    errors = _errors(got, _dense(_conv_zoo, video[:20], p))
    assert errors.max() <= 1e-4, errors.max()
    assert dstats.fallback_layers(stats) == []
    kinds = stepper.layers(p, video[0])
    assert sum(k == "conv" for k in kinds.values()) == 3
    assert sum(k == "linear:conv_general_dilated" for k in kinds.values()) == 1  # NCHW: the generic linear rule
    assert sum(k == "binary" for k in kinds.values()) == 1


def test_frame_argnum_and_pytree_output(video):
    w = jnp.ones((1, 1, 3, 2), jnp.float32) / 3

    def fn(x, w):
        y = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return {"map": jax.nn.relu(y), "mean": jnp.mean(y, axis=(1, 2))}

    stepper = deltajax.delta(fn, frame_argnum=0)
    out, state = stepper.init(video[0], w)
    out, state = stepper(state, video[1], w)
    want = fn(video[1], w)
    assert rel_error(out["map"], want["map"]) <= 1e-5 and rel_error(out["mean"], want["mean"]) <= 1e-5


def test_repeated_frame_gives_same_output_and_no_activity(video):
    model, variables = init_model("unet", video[0])
    stepper = deltajax.delta(model.apply)
    _, state = jax.jit(stepper.init)(variables, video[0])
    step = jax.jit(stepper.step_with_stats)
    y1, state, _ = step(state, variables, video[1])
    y2, state, stats = step(state, variables, video[1])
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    assert all(float(s.active) == 0.0 for name, s in stats.items() if name != "UNetish/Conv_4/densify")


def test_wrong_frame_shape_or_dtype_is_an_error(video):
    model, variables = init_model("se", video[0])
    stepper = deltajax.delta(model.apply)
    _, state = stepper.init(variables, video[0])
    with pytest.raises(ValueError, match=r"deltajax.delta step: argument args\[1\].*shape \(2, 16, 28, 3\).*expected"):
        stepper(state, variables, video[1][:, :16])
    with pytest.raises(ValueError, match=r"dtype bfloat16.*expected shape \(2, 20, 28, 3\) and dtype float32"):
        stepper(state, variables, video[1].astype(jnp.bfloat16))
    with pytest.raises(ValueError, match=r"deltajax.delta init: argument args\[1\].*dtype int32"):
        stepper.init(variables, video[0].astype(jnp.int32))
    with pytest.raises(ValueError, match=r"args\[1\] \(the frame\) must be an NHWC array"):
        stepper.init(variables, video[0, 0])


def test_missing_or_foreign_state_is_an_error(video):
    model, variables = init_model("se", video[0])
    stepper = deltajax.delta(model.apply)
    with pytest.raises(TypeError, match=r"argument 'state' must be the StreamState returned by stepper.init"):
        stepper(None, variables, video[1])
    other, other_vars = init_model("resnet", video[0])
    _, foreign = deltajax.delta(other.apply).init(other_vars, video[0])
    with pytest.raises(ValueError, match=r"argument 'state' has no layer .*start the stream with stepper.init"):
        stepper(foreign, variables, video[1])


def test_config_names_are_checked(video):
    model, variables = init_model("se", video[0])
    cfg = deltajax.DeltaConfig(layers={"SENet/nope/act": 0.1})
    with pytest.raises(ValueError, match=r"layer 'SENet/nope/act' is not a configurable layer.*SENet/silu/act"):
        deltajax.delta(model.apply, config=cfg).init(variables, video[0])
    with pytest.raises(TypeError, match=r"is an activation, expected a Truncation"):
        cfg = deltajax.DeltaConfig(layers={"SENet/silu/act": deltajax.SparsifyConfig(0.1)})
        deltajax.delta(model.apply, config=cfg).init(variables, video[0])
    assert hash(deltajax.DeltaConfig(layers={"a": 0.1})) == hash(deltajax.DeltaConfig(layers=(("a", 0.1),)))
