"""Several camera streams batched: N independent streams, each with its own masks, frames arriving one by one."""

import jax.numpy as jnp
import numpy as np

import deltajax
from deltajax import models
from deltajax.video import read_clip

module, variables, preprocess = models.load("efficientnet_lite0")
frames = np.asarray(preprocess(jnp.asarray(read_clip(max_frames=24, size=(144, 192)))))
cameras = np.stack([np.roll(frames, -6 * s, axis=0) for s in range(4)], axis=1)  # [T, 4 streams, H, W, 3]

stepper = deltajax.delta(module.apply, config=deltajax.DeltaConfig(threshold=0.05))
start, step = deltajax.streaming(stepper, variables)  # jitted; step donates the state
logits, state = start(cameras[0])  # the one call that starts (or restarts) the streams
for t in range(1, len(cameras)):
    logits, state = step(state, cameras[t])
print("top-1 of each stream at the last frame:", np.asarray(logits.argmax(-1)))
