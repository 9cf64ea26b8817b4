"""Flax Linen delta layers (state in the 'delta_state' collection) and a wrapper for any Linen model.

Start a stream with ``deltajax.linen.start(model, variables, frame)``; run
later frames with ``model.apply(variables, frame, mutable=['delta_state'])``.
"""

from deltajax.linen._stream import COLLECTION, start
from deltajax.linen.layers import (
    Activation,
    Add,
    AvgPool,
    BatchNorm,
    Concat,
    Conv,
    ConvTranspose,
    Dense,
    Densify,
    GlobalAvgPool,
    MaxPool,
    Multiply,
    Sparsify,
    Upsample,
)
from deltajax.linen.wrapper import DeltaWrapper

__all__ = [
    "COLLECTION",
    "Activation",
    "Add",
    "AvgPool",
    "BatchNorm",
    "Concat",
    "Conv",
    "ConvTranspose",
    "Dense",
    "DeltaWrapper",
    "Densify",
    "GlobalAvgPool",
    "MaxPool",
    "Multiply",
    "Sparsify",
    "Upsample",
    "start",
]
