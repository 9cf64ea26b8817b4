"""deltajax.run_clip and deltajax.streaming: one jit over a clip, frame-by-frame streams, keyframes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deltajax
from tests.flax_nets import init_model
from tests.harness import moving_blobs, rel_error

FRAMES = 30


@pytest.fixture(scope="module")
def setup():
    video = jnp.asarray(moving_blobs(FRAMES, 2, 20, 28, 3, seed=9))
    model, variables = init_model("resnet", video[0])
    dense = jax.jit(jax.vmap(lambda x: model.apply(variables, x)))(video)
    return video, model, variables, dense


def test_streaming_equals_run_clip(setup):
    video, model, variables, dense = setup
    stepper = deltajax.delta(model.apply)
    clip_out, stats = deltajax.run_clip(stepper, video, variables, with_stats=True)
    assert clip_out.shape == (FRAMES, 2, 5)
    assert stats["input"].active.shape == (FRAMES,)
    assert float(stats["input"].active[0]) == 1.0 and float(stats["input"].active[1:].max()) < 0.3
    start, step = deltajax.streaming(stepper, variables)
    out, state = start(video[0])
    outs = [out]
    for frame in video[1:]:
        out, state = step(state, frame)
        outs.append(out)
    # Within float rounding: the streamed step has the parameters compiled in as constants (an H200 gave
    # 5 ulps on 2 of 300 outputs).
    np.testing.assert_allclose(np.asarray(jnp.stack(outs)), np.asarray(clip_out), rtol=2e-6, atol=1e-6)
    assert max(rel_error(clip_out[t], dense[t]) for t in range(FRAMES)) <= 1e-4
    # The per-frame stats run_clip returns (packed into one vector per frame inside its scan) are the stepper's.
    _, state, frame_stats = stepper.init_with_stats(variables, video[0])
    per_frame = [frame_stats]
    step_with_stats = jax.jit(stepper.step_with_stats)
    for frame in video[1:]:
        _, state, frame_stats = step_with_stats(state, variables, frame)
        per_frame.append(frame_stats)
    want = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *per_frame)
    assert jax.tree_util.tree_structure(want) == jax.tree_util.tree_structure(stats)
    for w, g in zip(jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(stats), strict=True):
        assert g.dtype == w.dtype
        # rtol 1e-2: the scan and the jitted step are separate compilations, whose float rounding may differ by
        # an ulp, and at threshold 0 an ulp decides whether a pixel carries an update (one pixel of 280).
        np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(w, np.float64), rtol=1e-2)


def test_streaming_binds_the_parameters_it_is_given(setup):
    video, model, variables, dense = setup
    mine = jax.tree_util.tree_map(lambda a: a, variables)  # the caller's own containers, the same arrays
    start, step = deltajax.streaming(deltajax.delta(model.apply), mine)
    mine["params"] = jax.tree_util.tree_map(jnp.zeros_like, mine["params"])  # replaced before the first call
    _, state = start(video[0])
    out, _ = step(state, video[1])
    assert rel_error(out, dense[1]) <= 1e-4


def test_streaming_restart_at_scene_cut(setup):
    video, model, variables, dense = setup
    start, step = deltajax.streaming(deltajax.delta(model.apply), variables)
    _, state = start(video[0])
    _, state = step(state, video[1])
    out, state = start(video[10])  # a scene cut: the one call that starts a stream
    assert rel_error(out, dense[10]) <= 1e-5
    out, state = step(state, video[11])
    assert rel_error(out, dense[11]) <= 1e-4


def test_keyframes_refresh_the_state(setup):
    video, model, variables, dense = setup
    cfg = deltajax.DeltaConfig(threshold=0.3, truncation=deltajax.Truncation("max", 0.1))
    stepper = deltajax.delta(model.apply, config=cfg)
    outs, stats = deltajax.run_clip(stepper, video, variables, keyframe_every=7, with_stats=True)
    errors = np.array([rel_error(outs[t], dense[t]) for t in range(FRAMES)])
    assert errors[::7].max() <= 1e-5, "keyframes run densely"
    assert errors.max() > 1e-4, "between keyframes the thresholds act"
    np.testing.assert_array_equal(np.asarray(stats["input"].active[::7]), 1.0)
    start, step = deltajax.streaming(stepper, variables, keyframe_every=7)
    out, state = start(video[0])
    for t in range(1, 15):
        out, state = step(state, video[t])
    np.testing.assert_allclose(np.asarray(out), np.asarray(outs[14]), rtol=0, atol=1e-6)


def test_linen_module_in_the_loop(setup):
    video, model, variables, dense = setup
    wrapper = deltajax.linen.DeltaWrapper(model)
    wrapped = {k: {"module": v} for k, v in variables.items()}
    outs = deltajax.run_clip(wrapper, video[:10], variables=wrapped)
    start, step = deltajax.streaming(wrapper, variables=wrapped)
    out, state = start(video[0])
    for t in range(1, 10):
        out, state = step(state, video[t])
    assert rel_error(out, outs[9]) <= 1e-6 and rel_error(outs[9], dense[9]) <= 1e-4


def test_bad_loop_arguments(setup):
    video, model, variables, _ = setup
    stepper = deltajax.delta(model.apply)
    with pytest.raises(
        ValueError, match=r"run_clip: argument 'clip' must be \[T, N, H, W, C\].*got shape \(30, 2, 20, 28\)"
    ):
        deltajax.run_clip(stepper, video[..., 0], variables)
    with pytest.raises(ValueError, match=r"argument 'keyframe_every' must be a positive int or None, got 0"):
        deltajax.streaming(stepper, variables, keyframe_every=0)
    wrapper = deltajax.linen.DeltaWrapper(model)
    with pytest.raises(ValueError, match=r"argument 'keyframe_every' must be a positive int or None, got 2.5"):
        deltajax.run_clip(stepper, video[:2], variables, keyframe_every=2.5)
    with pytest.raises(ValueError, match=r"argument 'keyframe_every' must be a positive int or None, got -1"):
        deltajax.run_clip(wrapper, video[:2], variables={}, keyframe_every=-1)
    with pytest.raises(ValueError, match=r"with_stats=True needs a deltajax.delta stepper"):
        deltajax.run_clip(wrapper, video, variables={}, with_stats=True)
    with pytest.raises(ValueError, match=r"argument 'variables' is required for a Linen module"):
        deltajax.run_clip(wrapper, video)
    with pytest.raises(
        TypeError,
        match=r"argument 'model' must be a deltajax.delta stepper, a flax.linen Module or a flax.nnx Module, got",
    ):
        deltajax.run_clip(model.apply, video)
