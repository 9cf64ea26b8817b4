"""Tune per-layer thresholds on a short clip within an accuracy budget, save them, and use them."""

import jax.numpy as jnp

import deltajax
from deltajax import models, tune
from deltajax.video import read_clip

module, variables, preprocess = models.load("efficientnet_lite0")
clip = preprocess(jnp.asarray(read_clip(max_frames=12, size=(112, 160))))[:, None]
result = tune.tune_thresholds(
    module.apply,
    clip,
    variables,
    budget=tune.Budget(max_logit_error=0.05, min_top1_agreement=None),
    candidates=(0.05, 0.2),
    group=lambda name: "input" if name == "input" else "activations",  # 2 groups; the default tunes per block
)
print(result.table())
tune.save_thresholds("thresholds.json", result.config)
stepper = deltajax.delta(module.apply, config=tune.load_thresholds("thresholds.json"))
logits, stats = deltajax.run_clip(stepper, clip, variables, with_stats=True)
print(f"multiply-adds done / dense: {deltajax.stats.mac_ratio(stats):.2f}")
