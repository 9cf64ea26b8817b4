"""Error feedback in low precision: what a consumer accumulates is its producer's value rounded once.

Sparsify keeps as reference what it has sent and an activation the output it has sent, so a value rounded on one
frame is corrected on the next: after any number of frames, the sum of everything a producer emitted equals its
current value rounded once (to the delta dtype), not a sum of independent roundings that random-walks away.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deltajax import ops

pytestmark = pytest.mark.usefixtures("path")

FRAMES = 150


def _frames(dtype, seed=0):
    """``[FRAMES, 1, 6, 7, 5]``: a random walk with steps of all sizes, so the bfloat16 differences of consecutive
    frames are mostly not representable (they are rounded)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 1, (FRAMES, 1, 6, 7, 5)) * 10.0 ** rng.uniform(-3, 0, (FRAMES, 1, 6, 7, 1))
    steps *= rng.random((FRAMES, 1, 6, 7, 1)) < 0.6  # some pixels still on each frame
    return jnp.asarray(np.cumsum(steps, axis=0) + 3.0, dtype)


def _run(frames, body_init, body_step):
    @jax.jit
    def go(frames):
        out0, state = body_init(frames[0])

        def body(state, x):
            out, state = body_step(state, x)
            return state, out

        return jnp.concatenate([out0[None], jax.lax.scan(body, state, frames[1:])[1]])

    return go(frames)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_sparsify_emits_what_the_frame_holds_in_total(dtype):
    """The sum of sparsify's emitted deltas (densify, float32) equals the current frame at every frame up to one
    rounding of this frame's change (what is not sent now is sent with the next update), plus float32 rounding:
    the error does not grow with the frames."""
    frames = _frames(dtype)

    def init(x):
        d, s = ops.sparsify_init(x)
        y, t = ops.densify_init(d)
        return y.astype(jnp.float32), (s, t)

    def step(state, x):
        d, s = ops.sparsify(state[0], x)
        y, t = ops.densify(state[1], d)
        return t.out, (s, t)

    got = np.asarray(_run(frames, init, step), np.float64)
    want = np.asarray(frames, np.float64)
    change = np.abs(np.diff(want, axis=0, prepend=want[:1]))
    bound = float(jnp.finfo(dtype).eps) * change + 16 * float(jnp.finfo(jnp.float32).eps) * np.abs(want).max()
    worst = np.max(np.abs(got - want) / bound, axis=(1, 2, 3, 4), initial=0.0, where=bound > 0)
    assert worst.max() <= 1.0, f"frame {int(np.argmax(worst))}: {worst.max():.2f} x the bound"


def test_truncated_updates_wait_in_sent_not_lost():
    """An activation whose updates are dropped by truncation sends them later in one update: f(acc) - sent."""
    _, state = ops.activation_init(jnp.zeros((1, 1, 1, 1), jnp.bfloat16), "identity")
    trunc = ops.Truncation("max", 0.02)
    small = ops.Delta(jnp.full((1, 1, 1, 1), 0.0117, jnp.bfloat16), jnp.ones((1, 1, 1), bool))
    sent = []
    for _ in range(6):
        out, state = ops.activation(state, small, "identity", trunc)
        sent.append(float(out.values[0, 0, 0, 0]) if bool(out.mask[0, 0, 0]) else 0.0)
    assert sent[0] == 0.0 and sum(sent) == pytest.approx(float(state.sent[0, 0, 0, 0]))
    assert abs(float(state.acc[0, 0, 0, 0]) - sum(sent)) <= 0.02, (float(state.acc[0, 0, 0, 0]), sent)
