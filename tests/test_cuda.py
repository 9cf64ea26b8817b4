"""CUDA kernels against the pure-JAX reference, on the GPU (marker ``gpu``; small cases also ``sanitize``).

Every check draws fresh random inputs, poisons the inactive input values with NaN, and compares only the
active output pixels (elsewhere the values are unspecified), after checking that the output masks agree
exactly. The oracle is the reference path in float32 at precision HIGHEST on the same (possibly 16-bit)
inputs, so the tolerances below measure the kernels' arithmetic alone:

  float32, precision HIGHEST (3xTF32 on tensor cores, or FFMA)  rel <= 1e-5
  float32, default precision (TF32 tensor cores)                 rel <= 2e-3
  bfloat16 (fp32 accumulation, output rounded to bf16)           rel <= 1e-2
  float16                                                        rel <= 2e-3
with rel = max |got - want| / max |want| over the active output pixels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from deltajax import _native, ops
from deltajax.backend import use_reference
from tests.harness import moving_blobs, rel_error, run_dense, run_video
from tests.nets import ParamMaker, depthwise_separable

pytestmark = pytest.mark.gpu

HIGHEST = lax.Precision.HIGHEST
DEFAULT = lax.Precision.DEFAULT  # float32 -> TF32 on the tensor cores
TOL = {
    ("float32", "highest"): 1e-5,
    ("float32", "default"): 2e-3,
    ("bfloat16", "highest"): 1e-2,
    ("bfloat16", "default"): 1e-2,
    ("float16", "highest"): 2e-3,
    ("float16", "default"): 2e-3,
}


def _gpu():
    return next(d for d in jax.devices() if d.platform == "gpu")


def test_cuda_module_is_registered():
    assert "cuda" in _native.native_platforms(), _native.describe()
    assert "deltajax_conv" in _native.targets("cuda")


def _blob_mask(rng, n, h, w, p):
    """Per-stream masks: a few rectangles plus scattered pixels, about ``p`` of the pixels."""
    if p >= 1.0:
        return np.ones((n, h, w), bool)
    mask = rng.random((n, h, w)) < p / 2
    for s in range(n):
        for _ in range(2):
            bh, bw = max(1, int(h * np.sqrt(p / 4))), max(1, int(w * np.sqrt(p / 4)))
            y, x = rng.integers(0, max(h - bh, 1)), rng.integers(0, max(w - bw, 1))
            mask[s, y : y + bh, x : x + bw] = True
    return mask if p > 0 else np.zeros((n, h, w), bool)


def _conv_case(seed, *, n, h, w, cin, cout, k, dtype, p=0.3, groups=1, transpose=False, **kw):
    rng = np.random.default_rng(seed)
    kh, kw_ = (k, k) if isinstance(k, int) else k
    values = rng.normal(0, 1, (n, h, w, cin)).astype(np.float32)
    mask = _blob_mask(rng, n, h, w, p)
    kernel = rng.normal(0, 1 / np.sqrt(kh * kw_ * cin / groups), (kh, kw_, cin // groups, cout)).astype(np.float32)
    values = jnp.asarray(values).astype(dtype)
    kernel = jnp.asarray(kernel).astype(dtype)
    poisoned = jnp.where(jnp.asarray(mask)[..., None], values, jnp.nan).astype(dtype)
    return poisoned, jnp.asarray(mask), kernel, dict(groups=groups, transpose=transpose, **kw)


def _apply(values, mask, kernel, *, precision, groups, transpose, **kw):
    x = ops.Delta(values, mask)
    if transpose:
        return ops.conv_transpose(x, kernel, precision=precision, **kw)
    return ops.conv(x, kernel, groups=groups, precision=precision, **kw)


def _check_conv(values, mask, kernel, geometry, precision, tol):
    dev = _gpu()
    values, mask, kernel = (jax.device_put(a, dev) for a in (values, mask, kernel))
    got = jax.jit(lambda v, m, k: _apply(v, m, k, precision=precision, **geometry))(values, mask, kernel)
    with use_reference():
        want = jax.jit(lambda v, m, k: _apply(v, m, k, precision=HIGHEST, **geometry))(
            values.astype(jnp.float32), mask, kernel.astype(jnp.float32)
        )
    assert got.values.dtype == values.dtype
    np.testing.assert_array_equal(np.asarray(got.mask), np.asarray(want.mask))
    m = np.asarray(want.mask)
    g = np.asarray(got.values.astype(jnp.float32))[m]
    r = np.asarray(want.values)[m]
    if m.any():
        assert np.all(np.isfinite(g)), "NaN/inf at an active output pixel: an inactive input was read"
        err = rel_error(g, r)
        assert err <= tol, f"rel err {err:.2e} > {tol:.0e}"
    return got


SHAPES = {
    # name: (n, h, w, cin, cout, k, extra geometry)
    "3x3_c64": (2, 13, 17, 64, 64, 3, {}),
    "1x1_c64": (2, 11, 9, 64, 64, 1, {}),
    "3x3_c3_first_layer_s2": (1, 19, 23, 3, 16, 3, {"strides": 2}),
    "1x1_c24_to_40": (1, 10, 14, 24, 40, 1, {}),
    "3x3_c20_to_12_unaligned": (2, 9, 11, 20, 12, 3, {}),
    "3x3_c96_to_160_dil2": (1, 15, 12, 96, 160, 3, {"dilation": 2}),
    "5x5_c64_to_32_s2_valid": (1, 21, 18, 64, 32, 5, {"strides": 2, "padding": "VALID"}),
    "1x7_c32": (1, 9, 20, 32, 32, (1, 7), {}),
    "3x3_c40_odd_channels": (1, 12, 12, 40, 72, 3, {}),
    # Narrow outputs on tensor cores: row tiles spanning many image rows.
    "3x3_c32_to_40_w5": (2, 11, 5, 32, 40, 3, {}),
    "1x1_c32_w7": (1, 21, 7, 32, 32, 1, {}),
    "3x3_c64_s2_w6": (1, 30, 6, 64, 64, 3, {"strides": 2}),
    "depthwise_3x3_c32": (2, 12, 15, 32, 32, 3, {"groups": 32}),
    "depthwise_5x5_s2_c24": (1, 17, 13, 24, 24, 5, {"groups": 24, "strides": 2}),
    # Depthwise kernel (conv_depthwise.cu): 16-byte channel vectors when C is a multiple of 8 (16-bit) or 4
    # (float32), element loads otherwise; C > 32 vectors is split over several blocks (gridDim.z).
    "depthwise_3x3_c64": (2, 13, 17, 64, 64, 3, {"groups": 64}),
    "depthwise_5x5_c48": (2, 12, 14, 48, 48, 5, {"groups": 48}),
    "depthwise_7x7_c32": (1, 15, 16, 32, 32, 7, {"groups": 32}),
    "depthwise_1x7_c16": (1, 9, 20, 16, 16, (1, 7), {"groups": 16}),
    "depthwise_5x3_c40": (1, 11, 9, 40, 40, (5, 3), {"groups": 40}),
    "depthwise_3x3_s2_c64": (2, 15, 18, 64, 64, 3, {"groups": 64, "strides": 2}),
    "depthwise_3x3_dil2_c32": (1, 14, 13, 32, 32, 3, {"groups": 32, "dilation": 2}),
    "depthwise_3x3_s3_valid_c24": (1, 20, 17, 24, 24, 3, {"groups": 24, "strides": 3, "padding": "VALID"}),
    "depthwise_3x3_c3": (2, 10, 12, 3, 3, 3, {"groups": 3}),
    "depthwise_3x3_c13": (2, 11, 10, 13, 13, 3, {"groups": 13}),
    "depthwise_5x5_c13_s2": (1, 13, 15, 13, 13, 5, {"groups": 13, "strides": 2}),
    "depthwise_3x3_c256": (1, 9, 11, 256, 256, 3, {"groups": 256}),
    "depthwise_3x3_c520": (1, 6, 7, 520, 520, 3, {"groups": 520}),
    "depthwise_3x3_c1": (1, 8, 9, 1, 1, 3, {"groups": 1}),
    # Output masks by 32-bit words (conv.cu, mask_words_kernel): W and Wo multiples of 4, stride 1 and no
    # dilation along rows, kw <= 5; every byte offset of a tap window (pad_left 0..3), row strides and dilations;
    # for the tensor-core kernel and, with groups = 2, for the direct kernel.
    "words_3x3_c64": (2, 13, 16, 64, 64, 3, {}),
    "words_5x5_c32": (1, 9, 20, 32, 32, 5, {}),
    "words_1x1_c32_to_48": (2, 7, 8, 32, 48, 1, {}),
    "words_5x5_pad_0_4": (1, 10, 12, 32, 32, 5, {"padding": ((2, 2), (0, 4))}),
    "words_3x3_pad_3_3": (1, 9, 12, 32, 40, 3, {"padding": ((1, 1), (3, 3))}),
    "words_3x3_row_stride2": (1, 17, 24, 32, 32, 3, {"strides": (2, 1)}),
    "words_3x3_row_dil2": (1, 15, 20, 32, 32, 3, {"dilation": (2, 1)}),
    "words_3x1_c24": (2, 11, 8, 24, 24, (3, 1), {}),
    "words_direct_3x3_c64_g2": (2, 13, 16, 64, 64, 3, {"groups": 2}),
    "words_direct_5x5_pad_0_4_g2": (1, 10, 12, 32, 32, 5, {"padding": ((2, 2), (0, 4)), "groups": 2}),
    "words_direct_3x3_pad_3_3_g2": (1, 9, 12, 32, 40, 3, {"padding": ((1, 1), (3, 3)), "groups": 2}),
    "words_direct_3x3_row_stride2_g2": (1, 17, 24, 32, 32, 3, {"strides": (2, 1), "groups": 2}),
    "grouped_3x3_c32_g4": (1, 10, 10, 32, 64, 3, {"groups": 4}),
    "transposed_3x3_s2_c16": (1, 7, 9, 16, 8, 3, {"transpose": True, "strides": 2}),
    "transposed_4x4_s2_c64": (2, 6, 5, 64, 64, 4, {"transpose": True, "strides": 2}),
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("precision", ["highest", "default"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_conv_matches_reference(shape, precision, dtype):
    n, h, w, cin, cout, k, geo = SHAPES[shape]
    geo = dict(geo)
    groups = geo.pop("groups", 1)
    transpose = geo.pop("transpose", False)
    seed = zlib.crc32(f"{shape}/{precision}/{dtype}".encode())
    values, mask, kernel, geometry = _conv_case(
        seed, n=n, h=h, w=w, cin=cin, cout=cout, k=k, dtype=dtype, groups=groups, transpose=transpose, **geo
    )
    _check_conv(values, mask, kernel, geometry, HIGHEST if precision == "highest" else DEFAULT, TOL[(dtype, precision)])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("p", [0.0, 0.02, 0.5, 1.0])
@pytest.mark.parametrize("w", [45, 48])  # byte-wise and word-wise output masks
def test_conv_mask_fractions(p, dtype, w):
    """Empty and full masks, sparse and half-full, on a frame larger than one tile in every direction."""
    values, mask, kernel, geometry = _conv_case(7, n=2, h=37, w=w, cin=64, cout=96, k=3, dtype=dtype, p=p)
    got = _check_conv(values, mask, kernel, geometry, HIGHEST, TOL[(dtype, "highest")])
    if p == 0.0:
        assert not bool(got.mask.any())
    if p == 1.0:
        assert bool(got.mask.all())


@pytest.mark.parametrize(
    "dtype, precision",
    # float32: on Hopper the 64-channel kernel slice (295 KB) is past shared memory, so the list kernel at any count;
    # before Hopper the 32-channel slice (152 KB) and three groups of 16-channel halos (eight passes a tile);
    # bfloat16 on Hopper: the halo kernel in two passes, three groups of 23-KB halos beside its 147-KB slice
    [("float32", "highest"), ("float32", "default"), ("bfloat16", "default")],
)
def test_conv_large_channels(dtype, precision):
    """Several output-channel tiles and many row or pixel tiles (persistent blocks stride over them)."""
    values, mask, kernel, geometry = _conv_case(11, n=1, h=64, w=96, cin=128, cout=256, k=3, dtype=dtype, p=0.6)
    _check_conv(values, mask, kernel, geometry, HIGHEST if precision == "highest" else DEFAULT, TOL[(dtype, precision)])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("p", [0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("case", ["3x3_c64", "5x5_c24_to_40", "1x3_c48_to_72", "3x2_c16_pad_3_0", "1x1_c64_to_96"])
def test_conv_list_or_halo_kernel(case, p, dtype):
    """Stride-1 layers on both sides of the halo kernel's threshold (halo_fraction in conv_halo.cuh: on Hopper the
    active pixels fill 35 % of the active 8 x 16-pixel tiles with more than one tap, 65 % for 16-bit 1x1s; before
    Hopper 65 % for 16-bit values, 87 % for TF32): the list kernel at 1 %, the halo kernel at 100 % (frames that end
    inside a tile, input channels that are not a whole k-step, output channels past one 64-channel block, uneven
    padding). Float32 1x1s take the list kernel at every fraction."""
    kw = {
        "3x3_c64": dict(n=2, h=21, w=36, cin=64, cout=64, k=3),
        "5x5_c24_to_40": dict(n=1, h=19, w=40, cin=24, cout=40, k=5),
        "1x3_c48_to_72": dict(n=2, h=9, w=52, cin=48, cout=72, k=(1, 3)),
        "3x2_c16_pad_3_0": dict(n=1, h=17, w=36, cin=16, cout=16, k=(3, 2), padding=((3, 0), (0, 1))),
        "1x1_c64_to_96": dict(n=2, h=17, w=36, cin=64, cout=96, k=1),
    }[case]
    values, mask, kernel, geometry = _conv_case(zlib.crc32(f"{case}/{p}/{dtype}".encode()), dtype=dtype, p=p, **kw)
    _check_conv(values, mask, kernel, geometry, DEFAULT, TOL[(dtype, "default")])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("case", ["3x3_c64", "5x5_c24_to_40", "3x2_c16_pad_3_0"])
def test_conv_halo_kernel_on_some_tiles(case, dtype):
    """The halo kernel over part of the frame's tiles: the input rectangle makes output rows [8, 24) and columns
    [16, 48) of the second image active: four whole 8 x 16-pixel tiles (above any threshold), and nothing else."""
    n, h, w, cin, cout, k, pads = {
        "3x3_c64": (2, 33, 60, 64, 64, (3, 3), ((1, 1), (1, 1))),
        "5x5_c24_to_40": (2, 30, 56, 24, 40, (5, 5), ((2, 2), (2, 2))),
        "3x2_c16_pad_3_0": (2, 30, 64, 16, 16, (3, 2), ((3, 0), (0, 1))),
    }[case]
    (kh, kw), (pt, pl) = k, (pads[0][0], pads[1][0])
    values, _, kernel, geometry = _conv_case(
        zlib.crc32(f"{case}/{dtype}".encode()), n=n, h=h, w=w, cin=cin, cout=cout, k=k, dtype=dtype, p=1.0, padding=pads
    )
    mask = np.zeros((n, h, w), bool)  # output row oy is active iff an input row in [oy - pt, oy - pt + kh) is
    mask[1, 8 - pt + kh - 1 : 24 - pt, 16 - pl + kw - 1 : 48 - pl] = True
    values = jnp.where(jnp.asarray(mask)[..., None], values, jnp.nan).astype(dtype)
    got = _check_conv(values, jnp.asarray(mask), kernel, geometry, DEFAULT, TOL[(dtype, "default")])
    want_mask = np.zeros((n, *got.mask.shape[1:]), bool)
    want_mask[1, 8:24, 16:48] = True
    np.testing.assert_array_equal(np.asarray(got.mask), want_mask)


def test_conv_is_deterministic_across_runs():
    """Active pixels are compacted by atomics in any order; each pixel's result must not depend on it."""
    values, mask, kernel, geometry = _conv_case(3, n=2, h=40, w=40, cin=64, cout=64, k=3, dtype="float32", p=0.4)
    f = jax.jit(lambda v, m, k: _apply(v, m, k, precision=HIGHEST, **geometry))
    a, b = f(values, mask, kernel), f(values, mask, kernel)
    m = np.asarray(a.mask)
    np.testing.assert_array_equal(np.asarray(a.values)[m], np.asarray(b.values)[m])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("c", [64, 13])
@pytest.mark.parametrize("p", [0.0, 0.02, 0.5, 1.0])
def test_depthwise_mask_fractions(p, c, dtype):
    """Depthwise: empty and full masks, sparse and half-full, two streams with different masks."""
    values, mask, kernel, geometry = _conv_case(17, n=2, h=37, w=45, cin=c, cout=c, k=3, dtype=dtype, p=p, groups=c)
    got = _check_conv(values, mask, kernel, geometry, HIGHEST, TOL[(dtype, "highest")])
    if p == 0.0:
        assert not bool(got.mask.any())
    if p == 1.0:
        assert bool(got.mask.all())
    if 0.0 < p < 1.0:
        assert not np.array_equal(np.asarray(mask[0]), np.asarray(mask[1]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    "case",
    [
        # (n, h, w, c, k, geometry): frames with enough rows that the kernel keeps 1024-column segments (two
        # per row, the second partial), so every output row stages its mask rows in one batch (3x3) or two
        # (5x5 stride 2: 2051 columns x 5 rows > 8192 bytes).
        (2, 270, 1100, 16, 3, {}),
        (1, 1060, 2100, 8, 5, {"strides": 2}),
        (1, 600, 1030, 24, 7, {}),
    ],
    ids=["3x3_c16", "5x5_s2_c8", "7x7_c24"],
)
def test_depthwise_large_frames(case, dtype):
    n, h, w, c, k, geo = case
    values, mask, kernel, geometry = _conv_case(
        23, n=n, h=h, w=w, cin=c, cout=c, k=k, dtype=dtype, p=0.3, groups=c, **geo
    )
    _check_conv(values, mask, kernel, geometry, HIGHEST, TOL[(dtype, "highest")])


@pytest.mark.parametrize(
    "case",
    [
        # Mask + compaction kernel: a segment of 1024 outputs at stride 9 spans 9210 input columns, more than
        # the 8192 bytes staged in shared memory (read from global memory instead); stride 2 with 5 rows of
        # 2051 columns stages in two batches. Depthwise with a channel multiplier takes the direct kernel.
        dict(n=1, h=3, w=9300, cin=8, cout=8, k=3, strides=9),
        dict(n=1, h=12, w=2100, cin=8, cout=16, k=5, strides=2),
        dict(n=1, h=5, w=2100, cin=8, cout=16, k=3, groups=8),
    ],
    ids=["gemm_s9_unstaged", "gemm_5x5_s2_batches", "direct_channel_multiplier"],
)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_conv_wide_rows(case, dtype):
    values, mask, kernel, geometry = _conv_case(29, dtype=dtype, p=0.3, **case)
    _check_conv(values, mask, kernel, geometry, HIGHEST, TOL[(dtype, "highest")])


def test_depthwise_is_deterministic_and_poison_free():
    """No atomics in the depthwise kernel; results do not depend on the values at inactive inputs."""
    values, mask, kernel, geometry = _conv_case(31, n=2, h=30, w=33, cin=64, cout=64, k=3, dtype="float32", groups=64)
    f = jax.jit(lambda v, m, k: _apply(v, m, k, precision=HIGHEST, **geometry))
    a, b = f(values, mask, kernel), f(values, mask, kernel)
    other = jnp.where(mask[..., None], values, 1e30)  # different junk at the inactive pixels
    c = f(other, mask, kernel)
    m = np.asarray(a.mask)
    np.testing.assert_array_equal(np.asarray(a.values)[m], np.asarray(b.values)[m])
    np.testing.assert_array_equal(np.asarray(a.values)[m], np.asarray(c.values)[m])


def _stack(width, seed=0):
    """Sparsify -> conv3x3 -> relu -> conv3x3 -> relu -> conv1x1 -> densify, at a width that uses the GEMM."""
    m = ParamMaker(seed)
    params = {"w0": m.conv(3, 3, 3, width), "w1": m.conv(3, 3, width, width), "w2": m.conv(1, 1, width, width)}

    def net(ctx, p, x):
        h = ctx.act(ctx.conv(x, p["w0"]), "relu")
        h = ctx.act(ctx.conv(h, p["w1"]), "relu")
        return ctx.conv(h, p["w2"])

    return net, params


def test_threshold_zero_exact_over_100_frames_on_gpu():
    frames = 101
    video = moving_blobs(frames, 2, 24, 40, 3, seed=5)
    net, params = _stack(32)
    got, masks = run_video(net, params, video)
    want = run_dense(net, params, video)
    errors = [rel_error(got[t], want[t]) for t in range(frames)]
    assert max(errors) <= 1e-5, f"worst frame {int(np.argmax(errors))}: {max(errors):.2e}"
    assert 0.0 < float(jnp.mean(masks)) < 0.3


def test_poisoned_stack_is_unchanged():
    video = moving_blobs(10, 2, 24, 40, 3, seed=6)
    net, params = _stack(32, seed=1)
    clean, _ = run_video(net, params, video)
    poisoned, _ = run_video(net, params, video, poison=True)
    np.testing.assert_array_equal(np.asarray(clean), np.asarray(poisoned))


def test_depthwise_separable_exact_over_60_frames_on_gpu():
    """Stem, strided 3x3 depthwise, 1x1, 5x5 depthwise (tests/nets.py) at threshold 0: equals dense every frame."""
    frames = 61
    video = moving_blobs(frames, 2, 24, 40, 3, seed=7)
    net, params = depthwise_separable(c_in=3, width=16)
    got, masks = run_video(net, params, video)
    want = run_dense(net, params, video)
    errors = [rel_error(got[t], want[t]) for t in range(frames)]
    assert max(errors) <= 1e-5, f"worst frame {int(np.argmax(errors))}: {max(errors):.2e}"
    assert 0.0 < float(jnp.mean(masks)) < 0.3
    poisoned, _ = run_video(net, params, video[:10], poison=True)
    clean, _ = run_video(net, params, video[:10])
    np.testing.assert_array_equal(np.asarray(clean), np.asarray(poisoned))


def _pixelwise_case(seed, n, h, w, c, dtype):
    """Two poisoned deltas with different blob masks and update sizes, a dense state with non-zero residuals, and a
    per-channel scale."""
    rng = np.random.default_rng(seed)

    def delta():
        mask = jnp.asarray(_blob_mask(rng, n, h, w, 0.4))
        size = rng.uniform(0, 1, (n, h, w, 1)) ** 3  # small updates at many pixels: truncation drops some
        values = jnp.asarray(rng.normal(0, 1, (n, h, w, c)) * size, jnp.float32).astype(dtype)
        return ops.Delta(jnp.where(mask[..., None], values, jnp.nan).astype(dtype), mask)

    acc = jnp.asarray(rng.normal(0, 2, (n, h, w, c)), jnp.float32)
    sent = jnp.asarray(rng.normal(0, 0.2, (n, h, w, c)) * (rng.random((n, h, w, 1)) < 0.5), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32)
    return delta(), delta(), ops.ActivationState(acc, sent), scale


def _pixelwise_ops(x, y, state, scale):
    """Every kernel that walks the active pixels: activation (scaled, truncated), add + activation, add, affine,
    sparsify and densify; returns everything they produce."""
    trunc = ops.Truncation("max", 0.4)
    act, act_state = ops.activation(state, x, "relu6", trunc, scale=scale)
    add_act, add_act_state = ops.add_activation(state, x, y, "hard_swish", ops.Truncation("l2", 0.8))
    dense, _ = ops.densify(ops.DensifyState(state.acc), x)
    ref = jnp.where(x.mask[..., None], state.acc, state.acc + state.sent)  # some pixels unchanged, some not
    delta, sparse_state = ops.sparsify(ops.SparsifyState(ref), state.acc.astype(x.dtype), ops.SparsifyConfig(0.1))
    return act, act_state, add_act, add_act_state, ops.add(x, y), ops.affine(x, scale), dense, delta, sparse_state


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(  # 4, 8, 8, 16, 32 and 32 lanes per pixel; two of them also under compute-sanitizer
    "c", [pytest.param(3, marks=pytest.mark.sanitize), 8, 64, 144, pytest.param(480, marks=pytest.mark.sanitize), 1152]
)
def test_pixelwise_kernels_every_lane_layout(c, dtype):
    """The per-pixel kernels against the reference for each lanes-per-pixel layout of their walk: 2 x 9 x 13
    pixels (chunks of 32 with a ragged tail), different masks per operand, poisoned inactive values."""
    _assert_kernel_matches_reference(_pixelwise_ops, _pixelwise_case(c, 2, 9, 13, c, dtype), dtype)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(1, 181, 211, 8), (2, 300, 1001, 8)])
def test_pixelwise_kernels_on_large_frames(shape, dtype):
    """Frames large enough that the walk skims the masks several bytes per lane (spans of 2 to 16 chunks of 32
    pixels, teams cut to fewer warps), with a ragged tail after the last whole span."""
    _assert_kernel_matches_reference(_pixelwise_ops, _pixelwise_case(sum(shape), *shape, dtype), dtype)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("c", [3, 64, 144])
def test_prelu_kernel_matches_reference(c, dtype):
    """Per-channel PReLU (the super-resolution model's activation), scaled and truncated, on poisoned deltas."""
    x, _, state, scale = _pixelwise_case(c + 1, 2, 9, 13, c, dtype)
    slopes = jnp.linspace(-0.5, 0.8, c)

    def prelu(x, state, scale, slopes):
        return ops.activation(state, x, "prelu", ops.Truncation("max", 0.4), scale=scale, slopes=slopes)

    _assert_kernel_matches_reference(prelu, (x, state, scale, slopes), dtype)


def _assert_kernel_matches_reference(fn, args, dtype):
    """``fn(*args)`` on the GPU against the reference: output masks equal, values within the dtype's tolerance
    at active pixels (and finite there: no inactive input was read)."""
    got = jax.jit(fn)(*jax.device_put(args, _gpu()))
    with use_reference():
        want = jax.jit(fn)(*args)
    tol = 1e-5 if dtype == "float32" else 1e-2
    for g, r in zip(got, want, strict=True):
        if isinstance(g, ops.Delta):
            np.testing.assert_array_equal(np.asarray(g.mask), np.asarray(r.mask))
            m = np.asarray(r.mask)
            g, r = np.asarray(g.values.astype(jnp.float32))[m], np.asarray(r.values.astype(jnp.float32))[m]
            assert np.all(np.isfinite(g)), "NaN at an active output pixel: an inactive input was read"
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(r), strict=True):
            a, b = np.asarray(jnp.asarray(a, jnp.float32)), np.asarray(jnp.asarray(b, jnp.float32))
            assert rel_error(a, b) <= tol, f"rel err {rel_error(a, b):.2e} > {tol:.0e}"


@pytest.mark.sanitize
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    "case",
    [
        "gemm",
        "gemm_narrow",
        "direct_words",
        "unaligned",
        "depthwise",
        "depthwise_c13_s2",
        "depthwise_c272_split",
        "transposed",
        "empty",
        "full",
        "sparse",
    ],
)
def test_sanitize_small(case, dtype):
    """Small cases for compute-sanitizer (memcheck / racecheck): every kernel path once."""
    kw = {
        "gemm": dict(n=2, h=9, w=11, cin=32, cout=72, k=3),
        "gemm_narrow": dict(n=2, h=9, w=5, cin=32, cout=72, k=3),
        "direct_words": dict(n=1, h=9, w=12, cin=3, cout=16, k=3),
        "unaligned": dict(n=1, h=7, w=9, cin=12, cout=10, k=3),
        "depthwise": dict(n=2, h=8, w=8, cin=16, cout=16, k=3, groups=16),
        "depthwise_c13_s2": dict(n=2, h=9, w=10, cin=13, cout=13, k=5, groups=13, strides=2),
        "depthwise_c272_split": dict(n=1, h=6, w=7, cin=272, cout=272, k=3, groups=272),
        "transposed": dict(n=1, h=5, w=6, cin=16, cout=16, k=3, transpose=True, strides=2),
        "empty": dict(n=1, h=9, w=9, cin=32, cout=32, k=3, p=0.0),
        # bf16: the halo kernel and the list kernel's return (float32 HIGHEST keeps the list kernel)
        "full": dict(n=1, h=9, w=12, cin=32, cout=32, k=3, p=1.0),
        "sparse": dict(n=1, h=24, w=40, cin=32, cout=32, k=3, p=0.03),  # the list kernel, the halo kernel's return
    }[case]
    values, mask, kernel, geometry = _conv_case(1, dtype=dtype, **kw)
    _check_conv(values, mask, kernel, geometry, HIGHEST, TOL[(dtype, "highest")])


@pytest.mark.sanitize
def test_sanitize_halo_tf32():
    """The halo kernel in TF32 (float32, default precision) for compute-sanitizer: its kernel slice is copied 4
    bytes at a time into an input-channel-contiguous layout, with zeros past the 40 output channels."""
    values, mask, kernel, geometry = _conv_case(2, n=1, h=9, w=12, cin=24, cout=40, k=3, dtype="float32", p=1.0)
    _check_conv(values, mask, kernel, geometry, DEFAULT, TOL[("float32", "default")])


@pytest.mark.sanitize
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_conv_halo_kernel_strides_over_tiles(dtype):
    """More active tiles (2 x 17 x 20) than the halo kernel's grid has tile groups (an H100's or H200's 132 SMs x
    4): each group computes several, loading the next one's halo while it stores the last one's outputs."""
    values, mask, kernel, geometry = _conv_case(5, n=2, h=136, w=320, cin=16, cout=16, k=3, dtype=dtype, p=1.0)
    _check_conv(values, mask, kernel, geometry, DEFAULT, TOL[(dtype, "default")])


@pytest.mark.sanitize
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", ["3x3", "1x1_wide", "1x1_narrow", "depthwise", "depthwise_5x5_strided", "1x1_expand"])
def test_sanitize_conv_activation(case, dtype):
    """The conv_activation target against the reference: the rule in the epilogue of the tensor-core convolution
    (one channel tile, or several: the last block of a row tile decides, a kernel over the list emits) and of the
    depthwise one (vector path), and the two-launch paths whose bfloat16 convolution writes its float32 result into
    the workspace (element GEMM, direct, element depthwise)."""
    from tests.test_fused import _case
    from tests.test_native import assert_delta_close, assert_tree_close, both

    assert "deltajax_conv_activation" in _native.targets("cuda")
    x, kernel, state, scale, kw = _case(case, jnp.dtype(dtype), seed=8)
    trunc = ops.Truncation("max", 0.05)
    with jax.default_device(_gpu()):
        got, ref = both(
            lambda *a: ops.conv_activation(a[2], a[0], a[1], "relu6", trunc, a[3], **kw), x, kernel, state, scale
        )
    tol = TOL[(dtype, "highest")]
    assert_delta_close(got[0], ref[0], tol)
    assert_tree_close(got[1], ref[1], tol)
    np.testing.assert_array_equal(np.asarray(got[2]), np.asarray(ref[2]))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    "k,cin,cout,groups,p,precision",
    [
        (3, 32, 64, 1, 1.0, "highest"),
        pytest.param(3, 64, 48, 1, 0.6, "default", marks=pytest.mark.sanitize),  # TF32: the tile kernel's rule
        (3, 64, 64, 1, 0.3, "default"),
        (1, 32, 144, 1, 0.05, "highest"),
        (3, 32, 144, 1, 1.0, "highest"),
        (1, 32, 232, 1, 0.4, "highest"),
        (3, 32, 96, 1, 0.0, "highest"),
        (3, 144, 144, 144, 0.05, "highest"),
        (5, 240, 240, 240, 1.0, "highest"),
    ],
)
def test_conv_activation_rule_epilogue_over_many_row_tiles(k, cin, cout, groups, p, precision, dtype):
    """The activation rule in the convolution's epilogue on a 48x96 frame. Tensor cores: 36 row tiles of 128
    pixels, one tile of 64 output channels (decided in registers) or 2-4 (the last block of each row tile to
    arrive decides, a kernel over the list emits); in TF32 (float32 at the default precision) the tile kernel,
    where a 3x3 of at most 64 output channels has full enough tiles (each pixel's four lanes decide it; bfloat16
    keeps the list). Depthwise: the threads of a pixel add up its score in shared memory (bfloat16; float32's 36 and 60
    vectors are over the 32 a block holds, so it takes two launches). Every pixel, few or none active; kept pixels,
    state and output against the reference."""
    from tests.test_native import assert_delta_close, both

    values, mask, kernel, _ = _conv_case(11, n=1, h=48, w=96, cin=cin, cout=cout, k=k, dtype=dtype, p=p, groups=groups)
    rng = np.random.default_rng(12)
    acc = jnp.asarray(rng.normal(0, 2, (1, 48, 96, cout)), jnp.float32)
    sent = jax.nn.relu6(acc) + jnp.asarray(rng.normal(0, 0.05, acc.shape), jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, cout), jnp.float32)
    trunc = ops.Truncation("max", 0.05)
    with jax.default_device(_gpu()):
        got, ref = both(
            lambda v, m, w, a, s, c: ops.conv_activation(
                ops.ActivationState(a, s),
                ops.Delta(v, m),
                w,
                "relu6",
                trunc,
                c,
                groups=groups,
                precision=HIGHEST if precision == "highest" else DEFAULT,
            ),
            values,
            mask,
            kernel,
            acc,
            sent,
            scale,
        )
    tol = TOL[(dtype, precision)]
    np.testing.assert_array_equal(np.asarray(got[2]), np.asarray(ref[2]))
    assert_delta_close(got[0], ref[0], tol)
    np.testing.assert_allclose(np.asarray(got[1].acc), np.asarray(ref[1].acc), rtol=tol, atol=tol)
    # sent takes the emitted values: in bfloat16 an update within rounding of a tie may round the other way in
    # one of the two (one ulp of the largest output, 2^-7 of it: one element in 660 000 did on an H200)
    emitted = np.where(np.asarray(ref[0].mask)[..., None], np.asarray(ref[0].values, np.float32), 0)
    ulp = 2.0**-7 * float(np.abs(emitted).max()) if dtype == "bfloat16" else 0.0
    np.testing.assert_allclose(np.asarray(got[1].sent), np.asarray(ref[1].sent), rtol=tol, atol=tol + ulp)
    kept, active = int(got[0].mask.sum()), int(got[2].sum())
    assert kept <= active and (kept > 0) == (p > 0)


def _passes_in_own_process(variable: str, value: str, tests: list[str], passed: int, *pytest_args: str) -> None:
    """Runs this module's ``tests`` in a new pytest process with environment ``variable=value`` (the kernels read
    their measurement overrides once per process) and checks that ``passed`` of them pass."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *pytest_args]
        + [f"{__file__}::{t}" for t in tests],
        env={**os.environ, variable: value},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"{passed} passed" in run.stdout, run.stdout[-3000:]


def test_conv_activation_two_launches_when_the_epilogue_is_off():
    """``DELTAJAX_RULE_EPILOGUE=0`` sends every conv_activation through the convolution's float32 result and the
    activation kernel, the path that wider depthwise and element-load convolutions always take: the sanitize cases
    against the reference."""
    _passes_in_own_process("DELTAJAX_RULE_EPILOGUE", "0", ["test_sanitize_conv_activation"], 12, "-m", "sanitize")


def test_halo_kernel_on_mma_sync_where_wgmma_is_off():
    """``DELTAJAX_HALO_WGMMA=0`` keeps the halo kernel on mma.sync on Hopper, the kernel that cards before Hopper
    run: its geometry cases against the reference (on other cards the variable changes nothing, and the cases run
    the same kernel again). The large-channel case, where the tile kernel takes it, runs in several channel
    passes (bfloat16: four, three groups beside a 166-KB slice; TF32: eight, beside a 152-KB slice of 32
    channels)."""
    tests = [
        "test_conv_halo_kernel_on_some_tiles",
        "test_conv_halo_kernel_strides_over_tiles",
        "test_conv_large_channels",
        "test_conv_activation_rule_epilogue_over_many_row_tiles",
    ]
    _passes_in_own_process("DELTAJAX_HALO_WGMMA", "0", tests, 32)
