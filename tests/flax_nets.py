"""Ordinary Flax Linen models, written the way Flax users write them (nothing delta-specific)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

BN = dict(use_running_average=True)


class InvertedResidual(nn.Module):
    features: int
    strides: int = 1
    expand: int = 2

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        h = jax.nn.relu6(nn.BatchNorm(**BN)(nn.Conv(c * self.expand, (1, 1), use_bias=False)(x)))
        h = nn.Conv(c * self.expand, (3, 3), self.strides, padding="SAME", feature_group_count=c * self.expand)(h)
        h = jax.nn.relu6(nn.BatchNorm(**BN)(h))
        h = nn.BatchNorm(**BN)(nn.Conv(self.features, (1, 1), use_bias=False)(h))
        return x + h if self.strides == 1 and c == self.features else h


class MobileNetish(nn.Module):
    """MobileNetV2 / EfficientNet-Lite style: strided SAME stem, depthwise blocks, mean pool, Dense head."""

    classes: int = 5

    @nn.compact
    def __call__(self, x):
        x = jax.nn.relu6(nn.BatchNorm(**BN)(nn.Conv(8, (3, 3), strides=2, padding="SAME", use_bias=False)(x)))
        x = InvertedResidual(8)(x)
        x = InvertedResidual(12, strides=2)(x)
        x = InvertedResidual(12)(x)
        return nn.Dense(self.classes)(jnp.mean(x, axis=(1, 2)))


class BasicBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.BatchNorm(**BN)(nn.Conv(self.features, (3, 3), self.strides, use_bias=False)(x)))
        h = nn.BatchNorm(**BN)(nn.Conv(self.features, (3, 3), use_bias=False)(h))
        if x.shape != h.shape:
            x = nn.BatchNorm(**BN)(nn.Conv(self.features, (1, 1), self.strides, use_bias=False)(x))
        return nn.relu(x + h)


class ResNetish(nn.Module):
    """ResNet style: conv-BN-relu stem, 3x3/2 max pool, basic blocks with residuals, mean pool, head."""

    classes: int = 5

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm(**BN)(nn.Conv(8, (3, 3), use_bias=False)(x)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
        x = BasicBlock(8)(x)
        x = BasicBlock(12, strides=2)(x)
        return nn.Dense(self.classes)(jnp.mean(x, axis=(1, 2)))


class UNetish(nn.Module):
    """U-Net style: max-pool down, bilinear jax.image.resize and jnp.repeat up, skip concats, dense output map."""

    @nn.compact
    def __call__(self, x):
        e0 = nn.leaky_relu(nn.Conv(6, (3, 3))(x), 0.1)
        e1 = nn.relu(nn.Conv(8, (3, 3))(nn.max_pool(e0, (2, 2), strides=(2, 2))))
        e2 = nn.gelu(nn.Conv(8, (3, 3), strides=2)(e1))
        n, h, w, c = e2.shape
        u1 = jax.image.resize(e2, (n, 2 * h, 2 * w, c), "bilinear")
        d1 = nn.silu(nn.Conv(8, (3, 3))(jnp.concatenate([u1, e1], axis=-1)))
        u0 = jnp.repeat(jnp.repeat(d1, 2, axis=1), 2, axis=2)
        return nn.Conv(2, (1, 1))(jnp.concatenate([u0, e0], axis=-1))


class SqueezeExcite(nn.Module):
    @nn.compact
    def __call__(self, x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(nn.Dense(4)(s))
        return x * jax.nn.sigmoid(nn.Dense(x.shape[-1])(s))


class SENet(nn.Module):
    """Conv-BN-swish, a squeeze-excite block with a sigmoid gate, conv, mean pool, head."""

    classes: int = 5

    @nn.compact
    def __call__(self, x):
        x = nn.swish(nn.BatchNorm(**BN)(nn.Conv(8, (3, 3), strides=2)(x)))
        x = SqueezeExcite()(x)
        x = nn.hard_swish(nn.Conv(8, (3, 3))(x))
        return nn.Dense(self.classes)(jnp.mean(x, axis=(1, 2)))


MODELS = {"mobilenet": MobileNetish, "resnet": ResNetish, "unet": UNetish, "se": SENet}


def _randomise(tree, rng, lo, hi):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(rng.uniform(lo, hi, a.shape), a.dtype), tree)


def init_model(name: str, frame, seed: int = 0):
    """The model and its variables; batch-norm scale, offset, mean and var randomised so they matter."""
    model = MODELS[name]()
    variables = jax.jit(model.init)(jax.random.key(seed), frame)  # one compile, not one per op of the model
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: (
            _randomise(a, rng, 0.5, 1.5)
            if "scale" in jax.tree_util.keystr(path)
            else (_randomise(a, rng, -0.3, 0.3) if "BatchNorm" in jax.tree_util.keystr(path) else a)
        ),
        variables["params"],
    )
    out = {"params": params}
    if "batch_stats" in variables:
        stats = variables["batch_stats"]
        out["batch_stats"] = jax.tree_util.tree_map_with_path(
            lambda path, a: (
                _randomise(a, rng, 0.5, 2.0) if "var" in jax.tree_util.keystr(path) else _randomise(a, rng, -0.3, 0.3)
            ),
            stats,
        )
    return model, out
