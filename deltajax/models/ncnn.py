"""A reader for ncnn models (``.param`` text + ``.bin`` weights), numpy only.

Supports the layers of feed-forward CNNs such as Real-ESRGAN's compact model:
``Input``, ``Split``, ``Convolution``, ``PReLU``, ``PixelShuffle``, ``Interp``
and ``BinaryOp``. Weights stay in ncnn's layout: a convolution's kernel is
``[out, in, kh, kw]`` float32 (stored as fp16 or fp32 behind a 4-byte tag),
its bias ``[out]`` float32, a PReLU's slopes ``[C]`` float32.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

_MAGIC = 7767517
_TAG_F16 = 0x01306B47
_TAG_F32 = 0
_SHAPE_ONLY = ("Input", "Split", "PixelShuffle", "Interp", "BinaryOp")


class NcnnError(ValueError):
    """A ``.param``/``.bin`` pair that this reader cannot read (message names the file and what was wrong)."""


@dataclasses.dataclass(frozen=True)
class Layer:
    """One ncnn layer.

    Attributes:
      type: ncnn layer type (``"Convolution"``).
      name: the layer's name.
      inputs, outputs: blob names.
      params: ``{int key: int | float | tuple}`` from the ``k=v`` fields.
      weights: numpy arrays read from the ``.bin`` (``{"kernel", "bias"}``
        for a convolution, ``{"slopes"}`` for a PReLU, else empty).
    """

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict
    weights: dict = dataclasses.field(default_factory=dict)


def _value(text: str):
    if "," in text:
        return tuple(_value(t) for t in text.split(","))
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_param(text: str, path: str = "<param>") -> list[Layer]:
    """The layers of a ``.param`` file's text (no weights)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or lines[0] != [str(_MAGIC)]:
        got = " ".join(lines[0]) if lines else "an empty file"
        raise NcnnError(f"ncnn.load: {path} must start with the magic {_MAGIC}, got {got!r}")
    count = int(lines[1][0])
    if len(lines) - 2 != count:
        raise NcnnError(f"ncnn.load: {path} declares {count} layers, holds {len(lines) - 2}")
    layers = []
    for fields in lines[2:]:
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        blobs = fields[4 : 4 + n_in + n_out]
        params = {}
        for item in fields[4 + n_in + n_out :]:
            key, _, val = item.partition("=")
            params[int(key)] = _value(val)
        layers.append(Layer(kind, name, tuple(blobs[:n_in]), tuple(blobs[n_in:]), params))
    return layers


class _Reader:
    """Sequential reads from the ``.bin`` bytes."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path, self.pos = data, path, 0

    def take(self, nbytes: int, what: str) -> bytes:
        if self.pos + nbytes > len(self.data):
            raise NcnnError(f"ncnn.load: {self.path} ends at byte {len(self.data)} inside {what}")
        out = self.data[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return out

    def floats(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), "<f4").copy()

    def tagged(self, count: int, what: str) -> np.ndarray:
        """A weight blob: a 4-byte type tag, then fp16 (padded to 4 bytes) or fp32 values."""
        tag = int(np.frombuffer(self.take(4, what), "<u4")[0])
        if tag == _TAG_F16:
            raw = self.take((2 * count + 3) // 4 * 4, what)
            return np.frombuffer(raw[: 2 * count], "<f2").astype(np.float32)
        if tag == _TAG_F32:
            return self.floats(count, what)
        raise NcnnError(f"ncnn.load: {what} in {self.path} has weight tag {tag:#010x}, expected fp16 or fp32")


def _read_weights(layer: Layer, reader: _Reader) -> Layer:
    p = layer.params
    if layer.type == "Convolution":
        out, k, size = p[0], p[1], p[6]
        if size % (out * k * k):
            raise NcnnError(f"ncnn.load: {layer.name} has {size} weights, not a multiple of {out}x{k}x{k}")
        kernel = reader.tagged(size, layer.name).reshape(out, size // (out * k * k), k, k)
        bias = reader.floats(out, layer.name) if p.get(5, 0) else np.zeros(out, np.float32)
        return dataclasses.replace(layer, weights={"kernel": kernel, "bias": bias})
    if layer.type == "PReLU":
        return dataclasses.replace(layer, weights={"slopes": reader.floats(p.get(0, 1), layer.name)})
    if layer.type in _SHAPE_ONLY:
        return layer
    raise NcnnError(f"ncnn.load: layer {layer.name} has unsupported type {layer.type!r}")


def load(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> list[Layer]:
    """The layers of an ncnn model with their weights, in file order.

    Raises:
      NcnnError: bad magic, an unsupported layer type, a truncated ``.bin``
        or bytes left over after the last layer.
    """
    param_path, bin_path = os.fspath(param_path), os.fspath(bin_path)
    with open(param_path, encoding="ascii") as f:
        layers = parse_param(f.read(), param_path)
    with open(bin_path, "rb") as f:
        reader = _Reader(f.read(), bin_path)
    layers = [_read_weights(layer, reader) for layer in layers]
    if reader.pos != len(reader.data):
        raise NcnnError(f"ncnn.load: {bin_path} has {len(reader.data) - reader.pos} bytes after the last layer")
    return layers
