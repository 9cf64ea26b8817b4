"""The functional delta algebra (delta-semantics.md), one module per op family.

Conventions: dense ``[N, H, W, C]`` arrays are the first frame of a stream,
``Delta`` values the later frames. Stateless (linear) ops accept either;
stateful ops come in pairs, ``<op>_init(dense...) -> (out, state)`` and
``<op>(state, delta...) -> (out, state)``. States are NamedTuples of fixed
shape, float32.
"""

from deltajax.ops._delta import SUPPORTED_DTYPES, Delta
from deltajax.ops.combine import (
    BinaryState,
    add,
    add_activation,
    add_activation_init,
    binary,
    binary_init,
    concat,
    maximum,
    maximum_init,
    multiply,
    multiply_init,
)
from deltajax.ops.config import SparsifyConfig, Truncation
from deltajax.ops.conv import conv, conv_transpose
from deltajax.ops.elementwise import (
    ACTIVATION_NAMES,
    Activation,
    ActivationState,
    activation,
    activation_init,
    passes_truncation,
)
from deltajax.ops.fused import conv_activation
from deltajax.ops.linear import affine, batch_norm, dense, fold_batch_norm
from deltajax.ops.pool import (
    GlobalPoolState,
    MaxPoolState,
    avg_pool,
    global_avg_pool,
    global_avg_pool_init,
    max_pool,
    max_pool_init,
)
from deltajax.ops.resample import upsample
from deltajax.ops.sparsify import (
    DensifyState,
    SparsifyState,
    densify,
    densify_init,
    dilate_mask,
    sparsify,
    sparsify_changed,
    sparsify_init,
)

__all__ = [
    "ACTIVATION_NAMES",
    "SUPPORTED_DTYPES",
    "Activation",
    "ActivationState",
    "BinaryState",
    "Delta",
    "DensifyState",
    "GlobalPoolState",
    "MaxPoolState",
    "SparsifyConfig",
    "SparsifyState",
    "Truncation",
    "activation",
    "activation_init",
    "add",
    "add_activation",
    "add_activation_init",
    "affine",
    "avg_pool",
    "batch_norm",
    "binary",
    "binary_init",
    "concat",
    "conv",
    "conv_activation",
    "conv_transpose",
    "dense",
    "densify",
    "densify_init",
    "dilate_mask",
    "fold_batch_norm",
    "global_avg_pool",
    "global_avg_pool_init",
    "max_pool",
    "max_pool_init",
    "maximum",
    "maximum_init",
    "multiply",
    "multiply_init",
    "passes_truncation",
    "sparsify",
    "sparsify_changed",
    "sparsify_init",
    "upsample",
]
