"""deltajax.crossover: a model's delta step against its dense frame over the changed fraction of the frame."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import deltajax
from deltajax import crossover
from deltajax._native import default_platform
from deltajax.transform import _frames
from deltajax.transform.config import PLATFORMS, DeltaConfig
from tests.flax_nets import init_model
from tests.harness import moving_blobs


def test_interpolate_finds_where_delta_reaches_dense():
    assert crossover.interpolate([0.0, 0.1, 0.5, 1.0], [0.0, 0.5, 1.5, 2.0]) == pytest.approx(0.3)
    assert crossover.interpolate([0.0, 0.5, 1.0], [0.0, 0.4, 0.9]) is None
    assert crossover.interpolate([0.0, 1.0], [1.2, 3.0]) == 0.0


def test_changed_frame_changes_the_fraction_asked_for():
    frame = jnp.zeros((2, 64, 96, 3))
    for fraction in (0.0, 0.1, 0.5, 1.0):
        other, tiles = crossover.changed_frame(frame, fraction)
        changed = float(jnp.mean(jnp.any(other != frame, axis=-1)))
        assert changed == pytest.approx(fraction, abs=0.05) and tiles >= changed - 1e-6
    assert crossover.changed_frame(frame, 0.0)[1] == 0.0 and crossover.changed_frame(frame, 1.0)[1] == 1.0


def test_measure_times_dense_and_every_fraction_and_gives_a_setting(monkeypatch):
    """A small net on a small frame: a time per point, the tile activity rising from 0 to 1, and a setting that
    DeltaConfig takes, the crossover in it under the platform the test runs on (cpu or cuda)."""
    monkeypatch.setattr(crossover, "STEPS", 2)  # round trips per timed program (16): the curve's form, not its times
    frame = jnp.asarray(moving_blobs(1, 1, 48, 64, 3)[0])
    model, variables = init_model("mobilenet", frame)
    fractions = (0.0, 0.1, 1.0)
    curve = crossover.measure(model.apply, variables, frame, fractions=fractions)
    assert curve.fractions == fractions and len(curve.step_s) == len(curve.ratios) == 3
    assert curve.dense_s > 0 and all(s > 0 for s in curve.step_s)
    assert curve.tile_activity[0] == 0.0 and curve.tile_activity[-1] == 1.0
    assert curve.crossover is None or 0.0 <= curve.crossover <= 1.0
    here = default_platform()
    other = next(p for p in PLATFORMS if p != here)
    setting = crossover.keyframe_above(curve, {other: 0.0})
    assert setting == {other: 0.0, here: curve.crossover}
    assert dict(DeltaConfig(keyframe_above=setting).keyframe_above) == setting
    assert crossover.keyframe_above(curve, None) == {**dict.fromkeys(PLATFORMS), here: curve.crossover}


def test_measure_as_configured_runs_the_frames_as_the_config_sets_them(monkeypatch):
    """The default config resolved for the platform the test runs on; keyframe_above=0 a stepper whose changed
    frames all run the plain model, timed over every fraction like ``measure``."""
    frame = jnp.asarray(moving_blobs(1, 1, 32, 48, 3)[0])
    model, variables = init_model("mobilenet", frame)
    fractions = (0.0, 1.0)
    never = crossover.measure_as_configured(
        model.apply, variables, frame, config=DeltaConfig(keyframe_above=0.0), fractions=fractions, dense_s=0.5
    )
    assert never.fractions == fractions and never.tile_activity == (0.0, 1.0) and all(s > 0 for s in never.step_s)
    assert never.dense_s == 0.5  # the dense frame measured before, not timed again
    seen = []
    monkeypatch.setattr(crossover, "measure_stepper", lambda stepper, *args, **kw: seen.append((stepper, kw)))
    crossover.measure_as_configured(model.apply, variables, frame, fractions=fractions)
    ((stepper, kw),) = seen
    here = _frames.crossover_on(DeltaConfig().keyframe_above, default_platform())
    assert stepper.config == DeltaConfig() and stepper.never_delta == (here == 0) and kw["fractions"] == fractions


def test_a_synthetic_curve_gives_its_crossover():
    curve = crossover.Curve(2.0, (0.0, 0.5, 1.0), (0.0, 0.6, 1.0), (0.2, 1.4, 3.0))
    assert curve.ratios == (0.1, 0.7, 1.5)
    assert curve.crossover == pytest.approx(0.6 + 0.3 / 0.8 * 0.4)
    assert deltajax.crossover.keyframe_above(curve) == {default_platform(): curve.crossover}


def test_measure_names_a_frame_that_is_not_an_image():
    with pytest.raises(ValueError, match=r"deltajax.crossover.measure: argument args\[1\] \(the frame\) must be"):
        crossover.measure(lambda p, x: x, {}, np.zeros((4, 4)))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "fast"])
def test_measure_as_configured_refuses_a_dense_time_that_is_not_one(bad):
    frame = jnp.zeros((1, 8, 8, 3))
    with pytest.raises(ValueError, match=r"argument 'dense_s' must be a dense frame's seconds.*got"):
        crossover.measure_as_configured(lambda p, x: x, {}, frame, dense_s=bad)
