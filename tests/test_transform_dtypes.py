"""A model run in bfloat16: the float32 layer names (thresholds carry over) plus its feedback nodes, and it runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
    # bfloat16 adds the feedback nodes of the layers no activation follows (projections, adds), nothing else
    assert [n for n, kind in names16.items() if kind != "feedback"] == list(names32)
    assert "feedback" not in names32.values() and "feedback" in names16.values()
    config = deltajax.DeltaConfig(layers={n: 0.01 for n, kind in names32.items() if kind == "act"})
    outs = deltajax.run_clip(deltajax.delta(model.apply, config=config), clip.astype(jnp.bfloat16), half)
    assert outs.dtype == jnp.bfloat16
    dense = jax.vmap(lambda f: model.apply(variables, f))(clip)
    assert np.max(np.abs(np.asarray(outs, np.float32) - np.asarray(dense))) < 0.1 * np.max(np.abs(dense)) + 0.1


def test_feedback_off_sends_16bit_linear_outputs_as_they_are():
    """``DeltaConfig(feedback=False)``: no feedback nodes (the float32 names exactly), and the stream still runs
    close to dense; a non-bool is refused by name."""
    clip = jnp.asarray(moving_blobs(4, 1, 16, 24, 3, seed=3))
    model, variables = init_model("mobilenet", clip[0])
    half = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.bfloat16), variables)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(feedback=False))
    assert list(stepper.layers(half, clip[0].astype(jnp.bfloat16))) == list(stepper.layers(variables, clip[0]))
    outs = deltajax.run_clip(stepper, clip.astype(jnp.bfloat16), half)
    dense = jax.vmap(lambda f: model.apply(variables, f))(clip)
    assert np.max(np.abs(np.asarray(outs, np.float32) - np.asarray(dense))) < 0.1 * np.max(np.abs(dense)) + 0.1
    with pytest.raises(TypeError, match="DeltaConfig: feedback must be a bool, got int"):
        deltajax.DeltaConfig(feedback=1)
