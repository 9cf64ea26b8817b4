"""A whole clip in one jit: lax.scan over frames with the state carried, plus per-layer stats."""

import jax.numpy as jnp

import deltajax
from deltajax import models
from deltajax.video import read_clip

module, variables, preprocess = models.load("efficientnet_lite0")
clip = preprocess(jnp.asarray(read_clip(max_frames=16, size=(144, 192))))[:, None]  # [T, N=1, H, W, 3]
stepper = deltajax.delta(module.apply, config=deltajax.DeltaConfig(threshold=0.05))
logits, stats = deltajax.run_clip(stepper, clip, variables, with_stats=True)
labels = models.imagenet_labels()
print("top-1 per frame:", [labels[i] for i in logits[:, 0].argmax(-1)])
print(deltajax.stats.summary(stats).splitlines()[-1])
