"""deltajax.linen: delta layers and the wrapper agree with the stepper and the dense model."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deltajax
from deltajax import linen as dl
from tests.flax_nets import init_model
from tests.harness import moving_blobs, rel_error

FRAMES = 24


class Plain(nn.Module):
    """An ordinary Flax model."""

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu6(nn.BatchNorm(use_running_average=True)(nn.Conv(8, (3, 3))(x)))
        y = nn.Conv(8, (3, 3))(nn.max_pool(x, (2, 2), strides=(2, 2)))
        h = nn.relu(y + nn.Conv(8, (1, 1))(y))
        up = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
        return nn.Conv(2, (1, 1))(jnp.concatenate([up, x], axis=-1))


class Written(nn.Module):
    """The same network written with deltajax.linen layers (same parameter names and shapes)."""

    threshold: float = 0.0

    @nn.compact
    def __call__(self, frame):
        x = dl.Sparsify(self.threshold)(frame)
        x = dl.Activation("relu6")(dl.BatchNorm()(dl.Conv(8, (3, 3))(x)))
        y = dl.Conv(8, (3, 3))(dl.MaxPool((2, 2), (2, 2))(x))
        h = dl.Add(activation="relu")(y, dl.Conv(8, (1, 1))(y))
        up = dl.Upsample(2, "nearest")(h)
        return dl.Densify()(dl.Conv(2, (1, 1))(dl.Concat()(up, x)))


@pytest.fixture(scope="module")
def setup():
    video = jnp.asarray(moving_blobs(FRAMES, 2, 20, 28, 3, seed=7))
    variables = Plain().init(jax.random.key(0), video[0])
    rng = np.random.default_rng(1)
    stats = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype), variables)
    variables = {"params": variables["params"], "batch_stats": stats["batch_stats"]}
    dense = jax.jit(jax.vmap(lambda x: Plain().apply(variables, x)))(video)
    return video, variables, dense


def _linen_stream(model, variables, video):
    out, variables = dl.start(model, variables, video[0])

    @jax.jit
    def step(variables, frame):
        out, upd = model.apply(variables, frame, mutable=["delta_state"])
        return out, {**variables, **upd}

    outs = [out]
    for frame in video[1:]:
        out, variables = step(variables, frame)
        outs.append(out)
    return jnp.stack(outs)


def test_written_layers_equal_stepper_and_dense(setup):
    video, variables, dense = setup
    assert set(Written().init(jax.random.key(0), video[0])["params"]) == set(variables["params"])
    written = _linen_stream(Written(), variables, video)
    stepper = deltajax.run_clip(deltajax.delta(Plain().apply), video, variables)
    for t in range(FRAMES):
        assert rel_error(written[t], dense[t]) <= 1e-5, t
        assert rel_error(written[t], stepper[t]) <= 1e-5, t


def test_wrapper_equals_stepper(setup):
    video, variables, dense = setup
    model = dl.DeltaWrapper(Plain())
    wrapped_vars = model.init(jax.random.key(0), video[0])
    assert set(wrapped_vars) == {"params", "batch_stats"}
    wrapped_vars = {k: {"module": v} for k, v in variables.items()}
    wrapped = _linen_stream(model, wrapped_vars, video)
    stepper = deltajax.run_clip(deltajax.delta(Plain().apply), video, variables)
    np.testing.assert_allclose(np.asarray(wrapped), np.asarray(stepper), rtol=0, atol=1e-6)
    assert max(rel_error(wrapped[t], dense[t]) for t in range(FRAMES)) <= 1e-5


def test_input_threshold_matches_between_layers_and_stepper(setup):
    video, variables, dense = setup
    written = _linen_stream(Written(threshold=0.05), variables, video)
    cfg = deltajax.DeltaConfig(threshold=0.05)
    stepper = deltajax.run_clip(deltajax.delta(Plain().apply, config=cfg), video, variables)
    assert max(rel_error(written[t], stepper[t]) for t in range(FRAMES)) <= 1e-4


def test_wrapper_in_video_loop_and_mobilenet(setup):
    video = setup[0][:12]
    model, variables = init_model("mobilenet", video[0])
    wrapper = dl.DeltaWrapper(model)
    outs = deltajax.run_clip(wrapper, video, variables={k: {"module": v} for k, v in variables.items()})
    dense = jax.vmap(lambda x: model.apply(variables, x))(video)
    assert max(rel_error(outs[t], dense[t]) for t in range(len(video))) <= 1e-4


def test_stream_restart_is_one_call(setup):
    video, variables, dense = setup
    out, v = dl.start(Written(), variables, video[0])
    out, upd = Written().apply(v, video[1], mutable=["delta_state"])
    out, v = dl.start(Written(), {**v, **upd}, video[5])  # scene cut: start again, old state dropped
    assert rel_error(out, dense[5]) <= 1e-5
    out, _ = Written().apply(v, video[6], mutable=["delta_state"])
    assert rel_error(out, dense[6]) <= 1e-5


def test_missing_start_is_an_error(setup):
    video, variables, _ = setup
    with pytest.raises(ValueError, match=r"holds no state.*deltajax\.linen\.start"):
        Written().apply(variables, video[0], mutable=["delta_state"])
    with pytest.raises(ValueError, match=r"holds no state.*deltajax\.linen\.start"):
        dl.DeltaWrapper(Plain()).apply({k: {"module": v} for k, v in variables.items()}, video[0], mutable=True)


def test_dense_input_outside_start_is_an_error(setup):
    video, variables, _ = setup
    _, v = dl.start(Written(), variables, video[0])
    dl.Conv(8, (3, 3)).apply({"params": v["params"]["Conv_0"]}, video[1])  # stateless layers take both
    with pytest.raises(ValueError, match=r"Activation: got a dense input outside deltajax\.linen\.start"):
        dl.Activation("relu").apply({"delta_state": {}}, video[1], mutable=["delta_state"])


def test_immutable_state_is_an_error(setup):
    video, variables, _ = setup
    _, v = dl.start(Written(), variables, video[0])
    with pytest.raises(ValueError, match=r"mutable=\['delta_state'\]"):
        Written().apply(v, video[1])


def test_resolution_change_needs_a_restart(setup):
    video, variables, _ = setup
    _, v = dl.start(Written(), variables, video[0])
    with pytest.raises(ValueError, match=r"sparsify: argument 'state.ref'.*start the stream again"):
        Written().apply(v, video[1][:, :16], mutable=["delta_state"])
