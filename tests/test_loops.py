"""jit + lax.scan over frames and vmap over streams give the same results as a Python loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.harness import make_stream, moving_blobs, run_video
from tests.nets import residual_stack, se_classifier


def python_loop(net, params, video):
    init, step = make_stream(net, params)
    y, state = init(jnp.asarray(video[0]))
    outs = [y]
    for t in range(1, len(video)):
        y, state, _ = step(state, jnp.asarray(video[t]))
        outs.append(y)
    return np.stack([np.asarray(o) for o in outs])


def test_scan_under_jit_equals_python_loop():
    net, params = residual_stack()
    video = moving_blobs(12, 2, 12, 16, 3, seed=1)
    scanned, _ = run_video(net, params, video)
    np.testing.assert_allclose(np.asarray(scanned), python_loop(net, params, video), rtol=1e-6, atol=1e-6)


def test_vmap_over_streams_equals_a_loop_over_streams():
    net, params = se_classifier()
    video = moving_blobs(8, 3, 12, 16, 3, seed=2)  # [T, 3 streams, ...]
    init, step = make_stream(net, params)

    def one_stream(frames):  # frames [T, 1, H, W, C]
        y0, state = init(frames[0])

        def body(state, x):
            y, state, _ = step(state, x)
            return state, y

        _, ys = jax.lax.scan(body, state, frames[1:])
        return jnp.concatenate([y0[None], ys])

    streams = jnp.asarray(video).transpose(1, 0, 2, 3, 4)[:, :, None]  # [S, T, 1, H, W, C]
    batched = jax.jit(jax.vmap(one_stream))(streams)
    looped = np.stack([np.asarray(jax.jit(one_stream)(streams[s])) for s in range(3)])
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-6, atol=1e-6)
