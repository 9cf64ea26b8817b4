"""Turn an unmodified Flax CNN into a delta model with deltajax.delta, and check it against dense."""

import flax.linen as nn
import jax
import jax.numpy as jnp

import deltajax


class TinyNet(nn.Module):  # written the ordinary way: nothing deltajax-specific
    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu6(nn.BatchNorm(use_running_average=True)(nn.Conv(16, (3, 3), strides=2)(x)))
        h = nn.Conv(16, (3, 3), feature_group_count=16)(x)
        x = x + jax.nn.relu6(nn.Conv(16, (1, 1))(h))
        return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))


model = TinyNet()
frames = jax.random.uniform(jax.random.key(0), (10, 1, 64, 96, 3))
frames = frames.at[1:].set(frames[0]).at[1:, :, 20:30, 40:50].add(0.5)  # a small moving change
variables = model.init(jax.random.key(1), frames[0])

stepper = deltajax.delta(model.apply)  # params first, the frame last (frame_argnum=-1)
out, state = stepper.init(variables, frames[0])  # first frame: dense
step = jax.jit(stepper.__call__, donate_argnums=0)  # later frames: only what changed, state in place
for frame in frames[1:]:
    out, state = step(state, variables, frame)
    dense = model.apply(variables, frame)
    print(f"max |delta - dense| = {float(jnp.max(jnp.abs(out - dense))):.2e}")
print("layers:", list(stepper.layers(variables, frames[0]))[:4], "...")
