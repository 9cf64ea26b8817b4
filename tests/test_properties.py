"""delta-semantics.md section 5 on small networks built from every op family."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deltajax
from deltajax.video import run_clip
from tests.harness import DenseCtx, moving_blobs, rel_error, run_dense, run_video
from tests.nets import NETWORKS

# Every test runs on the native kernels and on the pure-JAX reference (conftest.path).
pytestmark = pytest.mark.usefixtures("path")

FRAMES = 101


@pytest.fixture(scope="module")
def video():
    return moving_blobs(FRAMES, 2, 20, 28, 3, seed=4)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_threshold_zero_is_exact_at_every_frame(name, video):
    net, params = NETWORKS[name]()
    got, masks = run_video(net, params, video)
    want = run_dense(net, params, video)
    errors = [rel_error(got[t], want[t]) for t in range(FRAMES)]
    assert max(errors) <= 1e-5, f"worst frame {int(np.argmax(errors))}: {max(errors):.2e}"
    assert 0.0 < float(jnp.mean(masks)) < 0.2, "the synthetic video should change locally"


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_poisoned_inactive_values_change_nothing(name, video):
    net, params = NETWORKS[name]()
    clean, _ = run_video(net, params, video[:12])
    poisoned, _ = run_video(net, params, video[:12], poison=True)
    np.testing.assert_array_equal(np.asarray(clean), np.asarray(poisoned))


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_repeated_frame_gives_empty_masks_and_same_output(name, video):
    from tests.harness import make_stream

    net, params = NETWORKS[name]()
    init, step = make_stream(net, params)
    y0, state = init(jnp.asarray(video[0]))
    y1, state, _ = step(state, jnp.asarray(video[1]))
    recorded = []
    y2, state2, mask = step(state, jnp.asarray(video[1]))
    assert not bool(mask.any())
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    del y0, recorded, state2


def test_repeated_frame_empties_every_layer_mask(video):
    """Property 4 inside the network: every intermediate Delta has an empty mask."""
    from deltajax import ops
    from tests.harness import InitCtx, StepCtx

    net, params = NETWORKS["unet_bilinear"]()
    seen = []

    class Spy(StepCtx):
        def act(self, x, name, truncation=None):
            seen.append(bool(x.mask.any()))
            return super().act(x, name, truncation)

    ctx = InitCtx()
    _, s = ops.sparsify_init(jnp.asarray(video[0]))
    net(ctx, params, jnp.asarray(video[0]))
    d, s = ops.sparsify(s, jnp.asarray(video[0]))
    out = net(Spy(ctx.states), params, d)
    assert seen and not any(seen)
    assert not bool(out.mask.any())


@pytest.mark.parametrize("name", ["residual_stack", "unet_bilinear", "se_classifier"])
def test_threshold_error_is_bounded_without_drift(name):
    net, params = NETWORKS[name]()
    video = moving_blobs(201, 1, 20, 28, 3, seed=5)
    rng = np.random.default_rng(0)
    video = video + rng.normal(0, 0.01, video.shape).astype(np.float32)  # camera noise below threshold
    got, masks = run_video(net, params, video, threshold=0.05)
    want = run_dense(net, params, video)
    errors = np.array([rel_error(got[t], want[t]) for t in range(len(video))])
    early, late = errors[20:40].max(), errors[180:201].max()
    assert errors.max() < 0.2, errors.max()
    assert late <= 2.0 * early + 1e-3, (early, late)
    assert float(jnp.mean(masks)) < 0.3, "noise under the threshold must not activate the frame"


@pytest.mark.parametrize("name", ["residual_stack", "depthwise_separable"])
def test_bfloat16_deltas_do_not_drift(name):
    """Property 2 in bfloat16 at threshold 0, through ``deltajax.delta``: over 301 frames the delta network stays as
    close to the float32 network as dense bfloat16 is, with no growth over time. Every 16-bit delta is emitted with
    its rounding fed back: the activations' (fused with their conv's float32 result), and the feedback nodes' of
    the layers no activation follows (residual_stack's 1x1 conv with a bias into the add, depthwise_separable's
    projection into the 5x5 depthwise): without those, residual_stack's error grew 1.6x."""
    frames = 301
    net, params = NETWORKS[name]()
    video = moving_blobs(frames, 1, 20, 28, 3, seed=6)
    half = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), params)
    config = deltajax.DeltaConfig(threshold=0.0, keyframe_above=None, refresh_every=None)
    stepper = deltajax.delta(lambda p, x: net(DenseCtx(), p, x), config=config)
    got = run_clip(stepper, jnp.asarray(video, jnp.bfloat16), half)
    dense_half = run_dense(net, half, video.astype(jnp.bfloat16))
    want = run_dense(net, params, video)
    errors = np.array([rel_error(got[t].astype(jnp.float32), want[t]) for t in range(frames)])
    dense_errors = np.array([rel_error(dense_half[t].astype(jnp.float32), want[t]) for t in range(frames)])
    assert errors[-20:].mean() <= 1.2 * errors[1:21].mean() + 1e-3, (errors[1:21].mean(), errors[-20:].mean())
    assert errors.max() <= 1.5 * dense_errors.max(), (errors.max(), dense_errors.max())
