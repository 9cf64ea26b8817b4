"""Pretrained ImageNet CNNs as ordinary Flax Linen models, loaded offline from pip-installed weights.

Example:
    >>> import numpy as np
    >>> from deltajax import models
    >>> module, variables, preprocess = models.load("mobilenet_v2")  # doctest: +SKIP
    >>> frames = np.zeros((1, 432, 768, 3), np.uint8)  # uint8 RGB, NHWC, any size
    >>> logits = module.apply(variables, preprocess(frames))  # doctest: +SKIP
    >>> models.imagenet_labels()[int(logits[0].argmax())]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from collections.abc import Callable

import flax.linen as nn
import jax

from deltajax.models import efficientnet_lite, mobilenet_v2, pose, superres
from deltajax.models.efficientnet_lite import EfficientNetLite0
from deltajax.models.mobilenet_v2 import MobileNetV2
from deltajax.models.weights import CheckpointError, load_state_dict

__all__ = [
    "MODELS",
    "CheckpointError",
    "EfficientNetLite0",
    "MobileNetV2",
    "efficientnet_lite",
    "imagenet_labels",
    "load",
    "load_state_dict",
    "mobilenet_v2",
    "pose",
    "superres",
]

MODELS = {"efficientnet_lite0": efficientnet_lite, "mobilenet_v2": mobilenet_v2, "pose": pose, "superres": superres}


def load(
    name: str, weights: str | os.PathLike | None = None
) -> tuple[nn.Module, dict, Callable[[jax.Array], jax.Array]]:
    """A pretrained ImageNet classifier, OpenPose MobileNet-thin (``"pose"``, see :mod:`.pose`) or the x4
    super-resolution model (``"superres"``, see :mod:`.superres`).

    Args:
        name: ``"efficientnet_lite0"``, ``"mobilenet_v2"``, ``"pose"`` or ``"superres"``.
        weights: a legacy PyTorch state dict to read instead of the one in
            the model's weights package (for ``"pose"``: a ``graph_opt.pb``,
            else the cached one, fetched if missing).

    Returns:
        ``(module, variables, preprocess)``: ``module.apply(variables, x)`` maps
        NHWC float32 ``x`` of any height and width to logits ``[N, 1000]``;
        ``preprocess`` maps uint8 RGB ``[N, H, W, 3]`` to that ``x`` (pose:
        maps ``[N, H/8, W/8, 57]`` from BGR 0..255; superres: maps to RGB
        ``[N, 4H, 4W, 3]`` in [0, 1]).

    Raises:
        ValueError: unknown ``name``, or a corrupted/foreign checkpoint.
        FileNotFoundError: the weights package is not installed (the message
            gives the pip command).
    """
    if name not in MODELS:
        raise ValueError(f"load: unknown model {name!r}; expected one of {sorted(MODELS)}")
    family = MODELS[name]
    module, variables = family.pretrained(weights)
    return module, variables, family.preprocess


@functools.cache
def _classes() -> tuple[tuple[str, str], ...]:
    text = importlib.resources.files(__name__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines())
    assert len(rows) == 1000 and all(len(r) == 2 for r in rows), "imagenet_classes.txt is damaged"
    return rows


def imagenet_labels(synonyms: bool = False) -> list[str]:
    """The 1000 ImageNet-1k class names in the models' output order.

    Args:
        synonyms: return every WordNet lemma (``"tabby, tabby cat"``) instead
            of the first (``"tabby"``). Two first names repeat ("crane",
            "maillot"); the synonyms are distinct except for "crane".
    """
    return [names if synonyms else names.split(",")[0] for _, names in _classes()]
