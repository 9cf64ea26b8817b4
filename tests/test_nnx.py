"""deltajax.nnx: Flax NNX models through deltajax.delta, the NNX wrapper and the video loops, exact at threshold 0."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import deltajax
from deltajax.nnx import DeltaState, DeltaWrapper
from tests.harness import moving_blobs, rel_error

FRAMES = 101


class LinenNet(nn.Module):
    """conv -> batch norm -> relu6, a depthwise residual, a max pool, a 1x1 head."""

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu6(nn.BatchNorm(use_running_average=True)(nn.Conv(8, (3, 3))(x)))
        x = x + jax.nn.relu6(nn.Conv(8, (3, 3), feature_group_count=8)(x))
        return nn.Conv(2, (1, 1))(nn.max_pool(x, (2, 2), strides=(2, 2)))


class NnxNet(nnx.Module):
    """LinenNet in Flax NNX."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.depthwise = nnx.Conv(8, 8, (3, 3), feature_group_count=8, rngs=rngs)
        self.head = nnx.Conv(8, 2, (1, 1), rngs=rngs)

    def __call__(self, x):
        x = jax.nn.relu6(self.bn(self.conv(x)))
        x = x + jax.nn.relu6(self.depthwise(x))
        return self.head(nnx.max_pool(x, (2, 2), strides=(2, 2)))


def _linen_twin(model: NnxNet) -> dict:
    """LinenNet's variables holding ``model``'s values."""

    def conv(c):
        return {"kernel": c.kernel.get_value(), "bias": c.bias.get_value()}

    bn = model.bn
    return {
        "params": {
            "Conv_0": conv(model.conv),
            "BatchNorm_0": {"scale": bn.scale.get_value(), "bias": bn.bias.get_value()},
            "Conv_1": conv(model.depthwise),
            "Conv_2": conv(model.head),
        },
        "batch_stats": {"BatchNorm_0": {"mean": bn.mean.get_value(), "var": bn.var.get_value()}},
    }


def _model(seed: int = 0) -> NnxNet:
    """An NnxNet with random (not initial) batch-norm statistics and biases, so that every term matters."""
    model = NnxNet(nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    for var in (model.bn.mean, model.bn.var, model.bn.scale, model.conv.bias, model.head.bias):
        var.set_value(jnp.asarray(rng.uniform(0.5, 1.5, var.get_value().shape), jnp.float32))
    return model


@pytest.fixture(scope="module")
def video():
    return jnp.asarray(moving_blobs(FRAMES, 2, 14, 18, 3, seed=3))


def _dense(model: nnx.Module, video) -> jax.Array:
    graphdef, state = nnx.split(model)
    return jax.jit(jax.vmap(lambda s, x: nnx.merge(graphdef, s)(x), in_axes=(None, 0)))(state, video)


def _max_error(got, want) -> float:
    return max(rel_error(g, w) for g, w in zip(got, want, strict=True))


def test_nnx_model_in_run_clip_is_exact_over_101_frames(video):
    model = _model()
    got, stats = deltajax.run_clip(model, video, with_stats=True)
    assert got.shape == (FRAMES, 2, 7, 9, 2)
    assert _max_error(got, _dense(model, video)) <= 1e-5
    assert deltajax.stats.fallback_layers(stats) == []
    # These tiny frames are busy enough for the GPU's crossover to run them densely: every frame a delta step.
    stepper = deltajax.delta(model, config=deltajax.DeltaConfig(keyframe_above=None))
    got, stats = deltajax.run_clip(stepper, video, with_stats=True)
    assert _max_error(got, _dense(model, video)) <= 1e-5
    assert deltajax.stats.keyframes(stats).sum() == 1 and deltajax.stats.mac_ratio(stats) < 1.0


def test_nnx_and_linen_versions_of_a_network_agree(video):
    model = _model(seed=1)
    variables = _linen_twin(model)
    linen_dense = jax.vmap(lambda x: LinenNet().apply(variables, x))(video[:12])
    np.testing.assert_allclose(np.asarray(_dense(model, video[:12])), np.asarray(linen_dense), rtol=0, atol=1e-6)
    linen = deltajax.run_clip(deltajax.delta(LinenNet().apply), video[:12], variables)
    ours = deltajax.run_clip(deltajax.delta(model), video[:12])
    np.testing.assert_allclose(np.asarray(ours), np.asarray(linen), rtol=0, atol=1e-6)


def test_delta_of_a_module_steps_exactly_and_names_layers(video):
    model = _model()
    stepper = deltajax.delta(model)
    assert isinstance(stepper, deltajax.nnx.ModuleStepper)
    dense = _dense(model, video[:6])
    out, state = jax.jit(stepper.init)(video[0])
    assert rel_error(out, dense[0]) <= 1e-5
    step = jax.jit(stepper, donate_argnums=0)
    for t in range(1, 6):
        out, state = step(state, video[t])
        assert rel_error(out, dense[t]) <= 1e-5, t
    kinds = stepper.layers(video[0])
    assert kinds["input"] == "sparsify" and "conv" in kinds.values()


def test_delta_of_a_module_takes_many_frames_at_once(video):
    """ModuleStepper.run_frames and step_frames give the outputs of init and steps (to float rounding: XLA fuses
    this model's first frame differently inside the clip's loop, by one float32 ulp), and a bad argument
    is named at its position among the module's own call arguments (the plain stepper's come after the module's
    state)."""
    model = _model()
    stepper = deltajax.delta(model, config=deltajax.DeltaConfig(keyframe_above=0.0))
    outs, state, _ = jax.jit(stepper.run_frames)(video[:4])
    more, state, stats = stepper.step_frames(state, video[4:6], with_stats=True)
    out, streamed = jax.jit(stepper.init)(video[0])
    want, step = [out], jax.jit(stepper)
    for t in range(1, 6):
        out, streamed = step(streamed, video[t])
        want.append(out)
    np.testing.assert_allclose(jnp.concatenate([outs, more]), jnp.stack(want), rtol=1e-6, atol=1e-6)
    assert stats["input"].keyframe.shape == (2,)
    with pytest.raises(ValueError, match=r"run_frames: argument args\[0\] \(the frames\) must be \[K, N, H, W, C\]"):
        stepper.run_frames(video[0])
    with pytest.raises(ValueError, match=r"delta step: argument args\[0\] \(the frame\) has shape \(2, 8, 18, 3\)"):
        stepper(state, video[1][:, :8])


def test_wrapper_under_nnx_jit_keeps_the_stream_in_a_delta_state(video):
    model = DeltaWrapper(_model())
    assert nnx.state(model, DeltaState)["stream"].get_value() is None
    step = nnx.jit(lambda model, frame, keyframe: model(frame, keyframe=keyframe))
    dense = _dense(model.module, video[:10])
    for t in range(10):
        out = step(model, video[t], t == 6)  # frame 6: a forced keyframe
        assert rel_error(out, dense[t]) <= 1e-5, t
    held = nnx.state(model, DeltaState)["stream"].get_value()
    assert isinstance(held, deltajax.StreamState) and held.frame_shape == video[0].shape
    np.testing.assert_array_equal(np.asarray(held.output), np.asarray(out))
    assert "stream" not in nnx.state(model, nnx.Param)
    model.reset()
    assert model.stream.get_value() is None
    assert rel_error(model(video[3]), dense[3]) <= 1e-5  # eager: a new stream starts densely


def test_wrapper_and_module_stream_through_streaming(video):
    wrapper = DeltaWrapper(_model(), deltajax.DeltaConfig(threshold=0.0))
    dense = _dense(wrapper.module, video[:5])
    for model in (wrapper, wrapper.module, deltajax.delta(wrapper.module)):
        start, step = deltajax.streaming(model)
        out, state = start(video[0])
        for t in range(1, 5):
            out, state = step(state, video[t])
            assert rel_error(out, dense[t]) <= 1e-5, (model, t)


def test_run_clip_takes_a_thresholded_wrapper_and_compiles_once(video):
    config = deltajax.DeltaConfig(threshold=0.3)
    wrapper = DeltaWrapper(_model(), config)
    compiled = deltajax.video._run_clip._cache_size()
    outs = [deltajax.run_clip(wrapper, video[:8]) for _ in range(2)]
    assert deltajax.video._run_clip._cache_size() == compiled + 1  # one stepper per module structure and config
    np.testing.assert_array_equal(np.asarray(outs[1]), np.asarray(outs[0]))
    stepper = deltajax.delta(wrapper.module, config=config)
    np.testing.assert_array_equal(np.asarray(outs[0]), np.asarray(deltajax.run_clip(stepper, video[:8])))


def test_bad_inputs_say_what_to_do(video):
    with pytest.raises(TypeError, match=r"DeltaWrapper: argument 'module' must be a flax.nnx.Module, got function"):
        DeltaWrapper(lambda x: x)
    with pytest.raises(TypeError, match=r"DeltaWrapper: argument 'config' must be a deltajax.DeltaConfig"):
        DeltaWrapper(_model(), config=0.1)
    model = DeltaWrapper(_model())
    model(video[0])
    with pytest.raises(ValueError, match=r"'frame' has shape \(2, 8, 18, 3\).*expected shape \(2, 14, 18, 3\).*reset"):
        model(video[1][:, :8])
