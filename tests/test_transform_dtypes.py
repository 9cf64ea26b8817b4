"""A model run in bfloat16: same layer names as in float32 (thresholds carry over), and it runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import deltajax
from tests.flax_nets import init_model
from tests.harness import moving_blobs


def test_bfloat16_stream_has_the_float32_layer_names_and_runs():
    clip = jnp.asarray(moving_blobs(4, 1, 16, 24, 3, seed=2))
    model, variables = init_model("mobilenet", clip[0])
    stepper = deltajax.delta(model.apply)
    half = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), variables)
    names32 = stepper.layers(variables, clip[0])
    names16 = stepper.layers(half, clip[0].astype(jnp.bfloat16))
    assert list(names16) == list(names32)
    config = deltajax.DeltaConfig(layers={n: 0.01 for n, kind in names32.items() if kind == "act"})
    outs = deltajax.run_clip(deltajax.delta(model.apply, config=config), clip.astype(jnp.bfloat16), half)
    assert outs.dtype == jnp.bfloat16
    dense = jax.vmap(lambda f: model.apply(variables, f))(clip)
    assert np.max(np.abs(np.asarray(outs, np.float32) - np.asarray(dense))) < 0.1 * np.max(np.abs(dense)) + 0.1
