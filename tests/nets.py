"""Small networks for the property tests, written once against a harness context."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class ParamMaker:
    """Seeded random parameters, scaled so activations stay O(1)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def conv(self, kh, kw, cin, cout):
        return jnp.asarray(self.rng.normal(0, 1 / np.sqrt(kh * kw * cin), (kh, kw, cin, cout)), jnp.float32)

    def vec(self, c, lo=-0.5, hi=0.5):
        return jnp.asarray(self.rng.uniform(lo, hi, c), jnp.float32)

    def bn(self, c):
        return {"scale": self.vec(c, 0.5, 1.5), "offset": self.vec(c), "mean": self.vec(c), "var": self.vec(c, 0.5, 2)}

    def dense(self, cin, cout):
        return jnp.asarray(self.rng.normal(0, 1 / np.sqrt(cin), (cin, cout)), jnp.float32)


def residual_stack(c_in=3, width=8, seed=0):
    """conv-BN-relu6 x3 with a residual add fused with relu6."""
    m = ParamMaker(seed)
    p = {
        "w0": m.conv(3, 3, c_in, width),
        "bn0": m.bn(width),
        "w1": m.conv(3, 3, width, width),
        "bn1": m.bn(width),
        "w2": m.conv(1, 1, width, width),
        "b2": m.vec(width),
    }

    def net(ctx, p, x):
        h = ctx.act(ctx.bn(ctx.conv(x, p["w0"]), p["bn0"]), "relu6")
        r = ctx.act(ctx.bn(ctx.conv(h, p["w1"]), p["bn1"]), "relu6")
        r = ctx.conv(r, p["w2"], p["b2"])
        return ctx.add(h, r, act="relu6")

    return net, p


def depthwise_separable(c_in=3, width=8, seed=1):
    """Stem, a strided 3x3 depthwise + BN + hard_swish, 1x1 projection, 5x5 depthwise, silu."""
    m = ParamMaker(seed)
    p = {
        "stem": m.conv(3, 3, c_in, width),
        "dw": m.conv(3, 3, 1, width),
        "bn": m.bn(width),
        "pw": m.conv(1, 1, width, 2 * width),
        "dw5": m.conv(5, 5, 1, 2 * width),
        "b5": m.vec(2 * width),
    }

    def net(ctx, p, x):
        h = ctx.act(ctx.conv(x, p["stem"]), "relu")
        h = ctx.act(ctx.bn(ctx.conv(h, p["dw"], strides=2, groups=h_channels(h)), p["bn"]), "hard_swish")
        h = ctx.conv(h, p["pw"])
        h = ctx.conv(h, p["dw5"], p["b5"], groups=h_channels(h))
        return ctx.act(h, "silu")

    return net, p


def h_channels(h):
    return (h.values if hasattr(h, "mask") else h).shape[-1]


def unet(c_in=3, width=6, seed=2, method="bilinear"):
    """Down (max pool, strided conv), up (upsample, transposed conv), skip concat."""
    m = ParamMaker(seed)
    p = {
        "e0": m.conv(3, 3, c_in, width),
        "e1": m.conv(3, 3, width, 2 * width),
        "e2": m.conv(3, 3, 2 * width, 2 * width),
        "up": m.conv(2, 2, 2 * width, width),
        "d0": m.conv(3, 3, 3 * width, width),
        "bd": m.vec(width),
        "out": m.conv(1, 1, 3 * width, 2),
    }

    def net(ctx, p, x):
        e0 = ctx.act(ctx.conv(x, p["e0"]), "leaky_relu")
        e1 = ctx.act(ctx.conv(ctx.max_pool(e0, 2), p["e1"]), "relu")
        e2 = ctx.act(ctx.conv(e1, p["e2"], strides=2, padding=((0, 1), (1, 1))), "tanh")
        u1 = ctx.conv(e2, p["up"], strides=2, transpose=True)
        d1 = ctx.act(ctx.conv(ctx.concat([u1, e1]), p["d0"], p["bd"], dilation=2), "gelu")
        up = ctx.upsample(d1, 2, method)
        return ctx.conv(ctx.concat([up, ctx.avg_pool(ctx.upsample(e1, 2, "nearest"), 3, 1, "SAME")]), p["out"])

    return net, p


def se_classifier(c_in=3, width=8, classes=5, seed=3):
    """Conv, a squeeze-excite gate (global pool, dense, sigmoid), global pool, dense head."""
    m = ParamMaker(seed)
    p = {
        "w0": m.conv(3, 3, c_in, width),
        "bn": m.bn(width),
        "se1": m.dense(width, 4),
        "se2": m.dense(4, width),
        "head": m.dense(width, classes),
        "hb": m.vec(classes),
        "w1": m.conv(3, 3, width, width),
    }

    def net(ctx, p, x):
        h = ctx.act(ctx.bn(ctx.conv(x, p["w0"], strides=2), p["bn"]), "swish")
        s = ctx.global_pool(h)
        g = jax.nn.sigmoid(jax.nn.relu(s @ p["se1"]) @ p["se2"])
        g = ctx.sparsify_vector(g[:, None, None, :])
        h = ctx.multiply(h, g)
        h = ctx.maximum(ctx.conv(h, p["w1"]), h)
        return ctx.dense(ctx.global_pool(h), p["head"], p["hb"])

    return net, p


NETWORKS = {
    "residual_stack": residual_stack,
    "depthwise_separable": depthwise_separable,
    "unet_bilinear": unet,
    "unet_nearest": lambda: unet(method="nearest"),
    "se_classifier": se_classifier,
}
