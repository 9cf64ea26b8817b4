"""DeltaConfig.rolling_refresh: each delta step recomputes a band of rows of every stateful layer's accumulated
input from what its producers hold (deltajax/transform/_refresh.py)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import deltajax
from deltajax.models import superres
from deltajax.transform._refresh import band_rows, rows
from tests import nets
from tests.harness import DenseCtx, moving_blobs, rel_error

PERIOD = 3


def _stepper(net_name: str, rolling: int | None):
    net, params = nets.NETWORKS[net_name]()
    config = deltajax.DeltaConfig(keyframe_above=None, refresh_every=None, rolling_refresh=rolling)
    return deltajax.delta(functools.partial(net, DenseCtx()), config=config), params


@pytest.mark.parametrize("start", range(-9, 9))
@pytest.mark.parametrize("h", [1, 2, 5, 7, 11])
def test_rows_of_a_band_read_zero_outside_the_map(start, h):
    x = jnp.arange(1, 11, dtype=jnp.float32).reshape(1, 5, 2, 1)
    want = np.zeros((1, h, 2, 1), np.float32)
    for i in range(h):
        if 0 <= start + i < 5:
            want[:, i] = np.asarray(x)[:, start + i]
    np.testing.assert_array_equal(jax.jit(rows, static_argnums=2)(x, jnp.int32(start), h), want)


@pytest.mark.parametrize("height", [1, 5, 14, 27, 216])
@pytest.mark.parametrize("period", [1, 3, 16, 64])
def test_bands_stay_in_the_map_and_cover_it_in_one_period(height, period):
    covered = np.zeros(height, bool)
    for phase in range(period):
        start, h = band_rows(height, jnp.int32(phase), period)
        assert int(start) >= 0 and int(start) + h <= height
        covered[int(start) : int(start) + h] = True
    assert covered.all()


@pytest.mark.parametrize("net_name", sorted(nets.NETWORKS))
def test_exact_at_every_frame_with_the_rolling_refresh(net_name):
    """Property 1 with the refresh on: threshold 0, every frame a delta step, each recomputing a band."""
    stepper, params = _stepper(net_name, PERIOD)
    video = jnp.asarray(moving_blobs(10, 2, 24, 32, 3, seed=1))
    out, state = stepper.init(params, video[0])
    step = jax.jit(stepper)
    for t in range(1, len(video)):
        out, state = step(state, params, video[t])
        assert rel_error(out, stepper.fn(params, video[t])) <= 1e-5, t


def _corrupt_first_band(layers: dict, period: int) -> dict:
    """Noise in the rows of the first band (phase 0) of every accumulator (not in what a node has sent)."""
    noise = np.random.default_rng(0)

    def corrupt(state):
        if not hasattr(state, "_replace"):
            return tuple(corrupt(s) for s in state) if isinstance(state, tuple) else state
        fields = {}
        for field in ("acc", "out", "acc_x", "acc_y"):
            x = getattr(state, field, None)
            if x is not None and x.ndim == 4:
                _, h = band_rows(x.shape[1], 0, period)
                fields[field] = x.at[:, :h].add(jnp.asarray(noise.normal(0, 0.3, x[:, :h].shape), x.dtype))
        return state._replace(**fields)

    return {name: state if name == "input" else corrupt(state) for name, state in layers.items()}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("net_name", ["residual_stack", "depthwise_separable"])
def test_a_step_recomputes_its_band_of_every_layer(net_name, dtype):
    """Every accumulator corrupted in the rows of the first band; a first delta step changes only the bottom
    rows (whose receptive fields miss that band), so nothing corrupted is read and sent before the step's refresh
    recomputes those rows; a second frame then changes everywhere. With the rolling refresh the output is the
    uncorrupted run's, bit for bit (the refresh writes the same rows in both); without it the corruption is in
    the output."""
    video = moving_blobs(2, 1, 24, 32, 3, seed=3)
    bottom = video[0].copy()
    bottom[:, 20:] += 0.5
    later = np.random.default_rng(1).uniform(-1, 1, video[0].shape).astype(np.float32)
    frames = [jnp.asarray(f, dtype) for f in (video[0], bottom, later)]
    errors, dense = {}, {}
    for rolling in (PERIOD, None):
        stepper, params = _stepper(net_name, rolling)
        params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
        outs = []
        for corrupt in (False, True):
            _, state = stepper.init(params, frames[0])
            if corrupt:
                state = dataclasses.replace(state, layers=_corrupt_first_band(state.layers, PERIOD))
            _, state = stepper(state, params, frames[1])
            outs.append(stepper(state, params, frames[2])[0])
        errors[rolling] = rel_error(outs[1], outs[0])
        dense[rolling] = rel_error(outs[1], stepper.fn(params, frames[2]))
    assert errors[PERIOD] == 0, errors
    assert errors[None] > 1e-2, errors
    # and what the refresh writes is right: the corrupted run with it is as close to dense as a delta step is
    assert dense[PERIOD] <= (1e-5 if dtype == jnp.float32 else 3e-2), dense


def test_layers_it_cannot_reach_are_named():
    """A bilinear resize contracts the rows with a matrix: the band of the U-Net's output would need the whole
    resized map, so the output is left to the keyframes and named; transposed convolutions, nearest upsampling
    and plain convolutions are all reached."""
    frame = jnp.zeros((1, 24, 32, 3))
    stepper, params = _stepper("unet_bilinear", PERIOD)
    assert stepper.unrefreshed(params, frame) == {"densify_0": "dot_general"}
    for net_name in ("unet_nearest", "residual_stack"):
        stepper, params = _stepper(net_name, PERIOD)
        assert stepper.unrefreshed(params, frame) == {}, net_name


def test_a_held_map_read_across_its_rows_is_named():
    """An NCHW frame transposed to NHWC: the input's held rows are its axis 1 (channels here), so the band of the
    convolution's rows would read it along another axis; the layer is named, with the input as the reason."""
    kernel = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 3, 4))

    def fn(w, x):
        return jax.nn.relu(DenseCtx().conv(jnp.transpose(x, (0, 2, 3, 1)), w))

    stepper = deltajax.delta(fn, config=deltajax.DeltaConfig(keyframe_above=None, rolling_refresh=PERIOD))
    assert set(stepper.unrefreshed(kernel, jnp.zeros((1, 3, 16, 20))).values()) == {"input"}


def _exact_with_rolling_refresh(fn, params, video, period=PERIOD):
    """Every frame a delta step at threshold 0 recomputing its band, the output equal to ``fn``'s; the refresh
    reaches every node."""
    config = deltajax.DeltaConfig(keyframe_above=None, refresh_every=None, rolling_refresh=period)
    stepper = deltajax.delta(fn, config=config)
    assert stepper.unrefreshed(params, video[0]) == {}
    out, state = stepper.init(params, video[0])
    step = jax.jit(stepper)
    for t in range(1, len(video)):
        out, state = step(state, params, video[t])
        assert rel_error(out, fn(params, video[t])) <= 1e-5, t


@pytest.mark.parametrize(
    "kernel, strides, padding",
    [
        (2, 2, "SAME"),
        (3, 2, "SAME"),
        (3, 2, "VALID"),
        (4, 3, ((2, 1), (1, 2))),
        (3, 1, ((0, -1), (1, 1))),
        (5, 2, ((-1, 0), (2, 2))),
    ],
)
def test_transposed_convolutions_are_refreshed(kernel, strides, padding):
    """A transposed convolution's band: its input rows are a floor division of the output band's, and its output
    starts where the dilated input does (negative padding crops)."""
    keys = jax.random.split(jax.random.PRNGKey(kernel * 10 + strides), 3)
    params = {
        "up": 0.3 * jax.random.normal(keys[0], (kernel, kernel, 4, 5)),
        "conv": 0.3 * jax.random.normal(keys[1], (3, 3, 3, 4)),
    }

    def fn(p, x):
        h = jax.nn.relu(DenseCtx().conv(x, p["conv"]))
        y = lax.conv_transpose(h, p["up"], (strides, strides), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.tanh(y)

    _exact_with_rolling_refresh(fn, params, jnp.asarray(moving_blobs(8, 2, 13, 11, 3, seed=4)), period=4)


def test_a_pixel_shuffle_is_refreshed():
    """Super-resolution's tail: a 4x depth-to-space (reshape, transpose, reshape) plus the nearest-upsampled input
    (broadcasts and reshapes): every band is read through them."""
    model = superres.SRVGGNetCompact(features=8, body_convs=2)
    video = jnp.asarray(moving_blobs(8, 2, 14, 18, 3, seed=5))
    params = model.init(jax.random.PRNGKey(0), video[0])
    _exact_with_rolling_refresh(model.apply, params, video, period=5)
