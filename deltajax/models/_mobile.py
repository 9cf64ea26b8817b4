"""What EfficientNet-Lite and MobileNetV2 share: inverted-residual blocks and weight conversion.

Both networks are a 3x3 stride-2 stem, a chain of inverted-residual blocks, a
1x1 head convolution, global average pooling and a linear classifier. They
differ in the block list, the padding convention (TF "SAME" vs. PyTorch's
symmetric ``k // 2``), the BatchNorm epsilon, the input normalisation and the
names of the PyTorch checkpoint keys; each model module supplies those.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from deltajax.models.weights import load_state_dict


class BlockSpec(NamedTuple):
    """One inverted-residual block: 1x1 expand, k x k depthwise, 1x1 project."""

    expand_ratio: int
    kernel_size: int
    strides: int
    features: int


def stages(*rows: tuple[int, int, int, int, int]) -> tuple[BlockSpec, ...]:
    """Expands ``(expand_ratio, kernel, stride, features, repeats)`` rows; only a row's first block strides."""
    return tuple(BlockSpec(e, k, s if i == 0 else 1, c) for e, k, s, c, n in rows for i in range(n))


class ConvBN(nn.Module):
    """Convolution without bias, inference BatchNorm, optional ReLU6.

    ``padding`` is ``"SAME"`` (TF: the extra row/column of an even total goes
    at the end) or ``"SYMMETRIC"`` (PyTorch: ``k // 2`` on every side).
    """

    features: int
    kernel_size: int
    strides: int = 1
    groups: int = 1
    padding: str = "SAME"
    epsilon: float = 1e-5
    relu6: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        pad = "SAME" if self.padding == "SAME" else [(k // 2, k // 2), (k // 2, k // 2)]
        x = nn.Conv(
            self.features,
            (k, k),
            strides=self.strides,
            padding=pad,
            feature_group_count=self.groups,
            use_bias=False,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=self.epsilon, name="bn")(x)
        return jax.nn.relu6(x) if self.relu6 else x


class InvertedResidual(nn.Module):
    """Expand (skipped at ratio 1), depthwise, linear project; residual when the shape is kept."""

    spec: BlockSpec
    padding: str = "SAME"
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        e, k, s, out = self.spec
        cin = x.shape[-1]
        hidden = cin * e
        h = x
        if e != 1:
            h = ConvBN(hidden, 1, padding=self.padding, epsilon=self.epsilon, name="expand")(h)
        h = ConvBN(hidden, k, s, groups=hidden, padding=self.padding, epsilon=self.epsilon, name="depthwise")(h)
        h = ConvBN(out, 1, padding=self.padding, epsilon=self.epsilon, relu6=False, name="project")(h)
        return x + h if s == 1 and cin == out else h


class MobileNet(nn.Module):
    """Stem, inverted-residual blocks, head, global average pool, linear classifier.

    Input NHWC float32 (already normalised); output logits ``[N, num_classes]``.
    Fully convolutional up to the pool, so any input height and width work.
    """

    blocks: tuple[BlockSpec, ...]
    padding: str
    epsilon: float
    stem_features: int = 32
    head_features: int = 1280
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = {"padding": self.padding, "epsilon": self.epsilon}
        x = ConvBN(self.stem_features, 3, 2, name="stem", **kw)(x)
        for i, spec in enumerate(self.blocks):
            x = InvertedResidual(spec, name=f"block{i}", **kw)(x)
        x = ConvBN(self.head_features, 1, name="head", **kw)(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="classifier")(x)


# --- PyTorch checkpoints -> Flax variables -------------------------------------------------------------------------

# A ConvBN unit in PyTorch: (conv weight key, BatchNorm key prefix).
TorchConvBN = tuple[str, str]


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    # OIHW -> HWIO; a depthwise [C, 1, kh, kw] becomes [kh, kw, 1, C], which is
    # what nn.Conv expects with feature_group_count=C.
    return np.transpose(w, (2, 3, 1, 0)) if w.ndim == 4 else w


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    module: MobileNet,
    units: Mapping[str, TorchConvBN],
    classifier: str,
    source: str,
) -> dict:
    """Maps a PyTorch state dict onto ``module``'s variables, checking names and shapes.

    Args:
        state_dict: PyTorch names -> arrays (OIHW convolutions, [out, in] linear).
        module: the Flax model the variables are for.
        units: Flax ConvBN path (``"block3/expand"``) -> (conv weight key, BN prefix).
        classifier: PyTorch prefix of the final linear layer.
        source: names the checkpoint in error messages.

    Returns:
        ``{"params": ..., "batch_stats": ...}`` of float32 ``jax.Array``.

    Raises:
        ValueError: a key is missing, a key is left unused, or a shape differs.
    """
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
    wanted = traverse_util.flatten_dict(nn.unbox(shapes), sep="/")

    sources: dict[str, tuple[str, bool]] = {}  # flax leaf -> (torch key, is a linear weight)
    for path, (conv, bn) in units.items():
        sources[f"params/{path}/conv/kernel"] = (conv, False)
        sources[f"params/{path}/bn/scale"] = (f"{bn}.weight", False)
        sources[f"params/{path}/bn/bias"] = (f"{bn}.bias", False)
        sources[f"batch_stats/{path}/bn/mean"] = (f"{bn}.running_mean", False)
        sources[f"batch_stats/{path}/bn/var"] = (f"{bn}.running_var", False)
    sources["params/classifier/kernel"] = (f"{classifier}.weight", True)
    sources["params/classifier/bias"] = (f"{classifier}.bias", False)

    unmapped = sorted(set(wanted) - set(sources))
    if unmapped:  # a bug in the model's key table, not in the file
        raise AssertionError(f"no PyTorch key is mapped to {unmapped}")
    missing = sorted(key for leaf, (key, _) in sources.items() if leaf in wanted and key not in state_dict)
    if missing:
        raise ValueError(f"{source}: missing key(s) {missing} for {type(module).__name__}")
    used = {sources[leaf][0] for leaf in wanted}
    unused = sorted(k for k in state_dict if k not in used and not k.endswith(".num_batches_tracked"))
    if unused:
        raise ValueError(f"{source}: unexpected key(s) {unused} for {type(module).__name__}")

    flat = {}
    for leaf, spec in wanted.items():
        key, linear = sources[leaf]
        value = np.asarray(state_dict[key])
        value = value.T if linear else _conv_kernel(value)
        if value.shape != spec.shape:
            raise ValueError(
                f"{source}: {key} has shape {state_dict[key].shape}, which converts to {value.shape}, "
                f"but {type(module).__name__} expects {spec.shape} at {leaf}"
            )
        flat[leaf] = jnp.asarray(value, jnp.float32)
    return traverse_util.unflatten_dict(flat, sep="/")


def packaged_file(package: str, relative: str, pip_command: str) -> str:
    """Path of a data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the weights package '{package}' is not installed; install it with: {pip_command}")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, relative)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"'{package}' is installed but has no {relative}; reinstall it with: {pip_command} --force-reinstall"
    )


def load_variables(
    path: str | os.PathLike, module: MobileNet, units: Mapping[str, TorchConvBN], classifier: str
) -> dict:
    """Reads a checkpoint file and converts it for ``module``."""
    return convert_state_dict(load_state_dict(path), module, units, classifier, os.fspath(path))


def check_uint8_rgb(images: jax.Array) -> None:
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != jnp.uint8:
        raise ValueError(
            f"preprocess: images must be uint8 RGB [N, H, W, 3], got {images.dtype} of shape {tuple(images.shape)}"
        )
