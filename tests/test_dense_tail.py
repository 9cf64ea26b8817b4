"""DeltaConfig.dense_from_stride: the coarse layers of a model run densely at every step, the rest on deltas."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

import deltajax
from deltajax import stats as dstats
from deltajax._native import default_platform
from deltajax.transform.config import PLATFORMS
from tests.flax_nets import MODELS, init_model
from tests.harness import moving_blobs, rel_error

FRAMES = 31


@pytest.fixture(scope="module")
def video():
    return jnp.asarray(moving_blobs(FRAMES, 2, 20, 28, 3, seed=7))


def _delta_steps(stride, **kw) -> deltajax.DeltaConfig:
    """Every changed frame a delta step (no crossover, no refresh keyframe), the tail from ``stride`` on."""
    return deltajax.DeltaConfig(keyframe_above=None, refresh_every=None, dense_from_stride=stride, **kw)


def _kinds(name: str, video, stride, **kw) -> tuple[dict, object, deltajax.Stepper]:
    model, variables = init_model(name, video[0])
    stepper = deltajax.delta(model.apply, config=_delta_steps(stride, **kw))
    return stepper.layers(variables, video[0]), variables, stepper


@pytest.mark.parametrize("stride", [1, 2, 4])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_dense_tail_is_exact_at_every_frame(name, stride, video):
    model, variables = init_model(name, video[0])
    stepper = deltajax.delta(model.apply, config=_delta_steps(stride))
    got = deltajax.run_clip(stepper, video, variables)
    want = jax.jit(jax.vmap(lambda x: model.apply(variables, x)))(video)
    errors = [rel_error(g, w) for g, w in zip(got, want, strict=True)]
    assert max(errors) <= 1e-4, f"worst frame {errors.index(max(errors))}: {max(errors):.2e}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_dense_tail_with_rolling_refresh_stays_exact(name, video):
    model, variables = init_model(name, video[0])
    stepper = deltajax.delta(model.apply, config=_delta_steps(4, rolling_refresh=4))
    got = deltajax.run_clip(stepper, video, variables)
    want = jax.jit(jax.vmap(lambda x: model.apply(variables, x)))(video)
    assert max(rel_error(g, w) for g, w in zip(got, want, strict=True)) <= 1e-4


def test_coarse_layers_lose_their_state_and_count_dense_work(video):
    """MobileNetish at stride 4: the layers at 5x7 keep no state, one densify node feeds them, and
    their multiply-adds count in full at every step."""
    full, variables, stepper_full = _kinds("mobilenet", video, None)
    tail, _, stepper_tail = _kinds("mobilenet", video, 4)
    acts = {n for n, k in full.items() if k == "act"}
    tail_acts = {n for n, k in tail.items() if k == "act"}
    assert tail_acts and tail_acts < acts, (tail_acts, acts)
    assert list(tail.values()).count("densify") == 1
    assert list(tail.values()).count("dense") > list(full.values()).count("dense")
    _, state_full = stepper_full.init(variables, video[0])
    _, state_tail = stepper_tail.init(variables, video[0])
    sizes = [sum(a.size for a in jax.tree_util.tree_leaves(s)) for s in (state_tail, state_full)]
    assert sizes[0] < sizes[1], sizes
    _, stats_full = deltajax.run_clip(stepper_full, video[:6], variables, with_stats=True)
    _, stats_tail = deltajax.run_clip(stepper_tail, video[:6], variables, with_stats=True)
    assert dstats.mac_ratio(stats_tail) > dstats.mac_ratio(stats_full)
    assert dstats.fallback_layers(stats_tail) == []


def test_a_tail_between_delta_layers_hands_back_through_a_sparsify(video):
    """UNetish at stride 4: the bottleneck runs densely; the decoder, back at full size, reads it through an
    exact sparsify node."""
    full, _, _ = _kinds("unet", video, None)
    tail, _, _ = _kinds("unet", video, 4)
    assert list(tail.values()).count("densify") >= 1
    assert list(tail.values()).count("sparsify") > list(full.values()).count("sparsify")
    assert tail["UNetish/sparsify"] == "sparsify"
    assert (tail["UNetish/Conv_3/conv"], tail["UNetish/silu/act"]) == ("conv", "act")  # the decoder: still deltas


def test_settings_of_layers_in_the_tail_are_accepted_and_typos_are_not(video):
    full, variables, _ = _kinds("mobilenet", video, None)
    tail, _, _ = _kinds("mobilenet", video, 4)
    gone = sorted(n for n, k in full.items() if k == "act" and n not in tail)
    assert gone
    model, _ = init_model("mobilenet", video[0])
    stepper = deltajax.delta(model.apply, config=_delta_steps(4, layers={gone[-1]: 0.1}))
    out, _ = stepper.init(variables, video[0])
    assert rel_error(out, model.apply(variables, video[0])) <= 1e-5
    typo = deltajax.delta(model.apply, config=_delta_steps(4, layers={gone[-1] + "x": 0.1}))
    with pytest.raises(ValueError, match=r"is not a configurable layer of this model; expected one of .*" + gone[-1]):
        typo.init(variables, video[0])


def test_a_stride_per_platform_applies_where_the_program_runs(video):
    """{platform: stride}: the default backend's value for a stepper called directly, the named platform's through
    on_platform (what run_clip and streaming call); platforms it does not name get no tail."""
    here = default_platform()
    elsewhere = next(p for p in PLATFORMS if p != here)
    plain, variables, _ = _kinds("mobilenet", video, None)
    tail, _, _ = _kinds("mobilenet", video, 4)
    mine, _, stepper = _kinds("mobilenet", video, {here: 4})
    theirs, _, other = _kinds("mobilenet", video, {elsewhere: 4})
    assert (mine, theirs) == (tail, plain)
    assert other.on_platform(elsewhere).config.dense_from_stride == 4
    assert other.on_platform(elsewhere).layers(variables, video[0]) == tail
    assert stepper.on_platform(elsewhere).config.dense_from_stride is None
    assert stepper.on_platform(here) is stepper.on_platform(here)  # one object: a jit keyed on it compiles once
    got = deltajax.run_clip(stepper, video[:8], variables)
    want = deltajax.run_clip(deltajax.delta(init_model("mobilenet", video[0])[0].apply), video[:8], variables)
    assert max(rel_error(g, w) for g, w in zip(got, want, strict=True)) <= 1e-4


def test_per_platform_strides_are_stored_sorted_and_compare_equal():
    a = deltajax.DeltaConfig(dense_from_stride={"cuda": 8, "cpu": None})
    b = deltajax.DeltaConfig(dense_from_stride=(("cpu", None), ("cuda", 8)))
    assert a == b and hash(a) == hash(b) and a.dense_from_stride == (("cpu", None), ("cuda", 8))
    assert [a.dense_from_stride_on(p) for p in ("cuda", "cpu", "tpu")] == [8, None, None]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "16", {"gpu": 8}, {"cuda": 0}, {"cuda": 2.0}, (16,)])
def test_dense_from_stride_must_be_a_positive_int_none_or_per_platform(bad):
    expected = (
        r"DeltaConfig: dense_from_stride must be a positive int, None, or a mapping from platforms "
        rf"\('cpu', 'cuda', 'rocm', 'tpu'\) to positive ints or None, got {re.escape(repr(bad))}"
    )
    with pytest.raises(ValueError, match=expected):
        deltajax.DeltaConfig(dense_from_stride=bad)
