"""TensorFlow frozen graphs (``GraphDef``) read without TensorFlow or protobuf: nodes, attributes, constants.

Only what a frozen inference graph needs is decoded (tensorflow/core/framework/{graph,node_def,attr_value,
tensor,tensor_shape,types}.proto): ``GraphDef.node`` (1); ``NodeDef`` name (1), op (2), input (3), attr (5,
a map of ``AttrValue``); ``AttrValue`` list (1), s (2), i (3), f (4), b (5), type (6), shape (7), tensor (8);
``TensorProto`` dtype (1), shape (2), tensor_content (4) and the typed ``*_val`` fields.

Example:
    >>> nodes = read_graph(open("graph_opt.pb", "rb").read())  # doctest: +SKIP
    >>> nodes[0].op, nodes[0].attr["dtype"]  # doctest: +SKIP
    ('Placeholder', dtype('float32'))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from deltajax.models._wire import WireError, fields, packed, to_signed

__all__ = ["GraphError", "Node", "read_graph", "read_tensor"]

# TensorFlow DataType enum -> numpy dtype (the types a frozen CNN graph holds).
DTYPES = {
    1: np.dtype("float32"),
    2: np.dtype("float64"),
    3: np.dtype("int32"),
    4: np.dtype("uint8"),
    5: np.dtype("int16"),
    6: np.dtype("int8"),
    9: np.dtype("int64"),
    10: np.dtype("bool"),
    19: np.dtype("float16"),
}
# TensorProto typed value fields: field number -> how one record is decoded (see _wire.packed).
_VALUE_FIELDS = {5: "f4", 6: "f8", 7: "varint", 10: "varint", 11: "varint", 13: "varint"}


class GraphError(WireError):
    """A graph that is not a TensorFlow GraphDef this reader understands."""


@dataclasses.dataclass(frozen=True)
class Node:
    """One ``NodeDef``: ``inputs`` as written (``"name"``, ``"name:1"``, ``"^control"``), ``attr`` decoded:
    strings as ``str``, lists as tuples, types as numpy dtypes, shapes as tuples, tensors as arrays."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attr: Mapping[str, object]


def _dtype(code: int, where: str) -> np.dtype:
    if code not in DTYPES:
        raise GraphError(f"read_graph: {where} has TensorFlow dtype {code}, expected one of {sorted(DTYPES)}")
    return DTYPES[code]


def _shape(buf: bytes) -> tuple[int, ...]:
    """A ``TensorShapeProto``: dim (2) sizes, -1 for unknown."""
    dims = []
    for number, _, value in fields(buf):
        if number == 2:
            dims.append(next((to_signed(v) for n, _, v in fields(value) if n == 1), 0))
    return tuple(dims)


def read_tensor(buf: bytes) -> np.ndarray:
    """A serialized ``TensorProto`` as a numpy array of its dtype and shape.

    Values come from ``tensor_content`` (raw little-endian) or a typed value field; as in TensorFlow, a value
    field holding fewer values than the shape has is filled with its last value (a splat constant).
    """
    code, shape, content, values = 1, (), None, []
    for number, wire, value in fields(buf):
        if number == 1:
            code = value
        elif number == 2:
            shape = _shape(value)
        elif number == 4:
            content = value
        elif number in _VALUE_FIELDS:
            values.append(packed(wire, value, _VALUE_FIELDS[number]))
    dtype = _dtype(code, "a TensorProto")
    size = int(np.prod(shape, dtype=np.int64))
    if content is not None:
        if len(content) != size * dtype.itemsize:
            raise GraphError(
                f"read_tensor: tensor_content holds {len(content)} bytes, expected {size * dtype.itemsize} for "
                f"shape {shape} {dtype}"
            )
        return np.frombuffer(content, dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    flat = np.concatenate(values) if values else np.zeros(0)
    if dtype == np.float16 and flat.size:
        flat = flat.astype(np.uint16).view(np.float16)  # half_val holds the raw bits
    if flat.size > size or (flat.size == 0 and size):
        raise GraphError(f"read_tensor: {flat.size} values for shape {shape}, expected between 1 and {size}")
    if flat.size < size:
        flat = np.concatenate([flat, np.full(size - flat.size, flat[-1])])
    return flat.astype(dtype).reshape(shape)


def _list(buf: bytes) -> tuple:
    """An ``AttrValue.ListValue``: s (2), i (3), f (4), b (5), type (6), shape (7), tensor (8)."""
    out = []
    for number, wire, value in fields(buf):
        if number == 2:
            out.append(value.decode())
        elif number in (3, 5):
            out.extend(int(v) for v in packed(wire, value, "varint"))
        elif number == 4:
            out.extend(float(v) for v in packed(wire, value, "f4"))
        elif number == 6:
            out.extend(_dtype(int(v), "a list attribute") for v in packed(wire, value, "varint"))
        elif number == 7:
            out.append(_shape(value))
        elif number == 8:
            out.append(read_tensor(value))
    return tuple(out)


_ATTR_DECODERS = {
    1: _list,
    2: lambda v: v.decode(errors="replace"),
    3: to_signed,
    4: lambda v: float(np.frombuffer(v.to_bytes(4, "little"), "<f4")[0]),
    5: bool,
    6: lambda v: _dtype(v, "a type attribute"),
    7: _shape,
    8: read_tensor,
}


def _attr_value(buf: bytes):
    """An ``AttrValue``: the value of whichever of its fields is set (``None`` for others, e.g. func)."""
    result = None
    for number, _, value in fields(buf):
        if number in _ATTR_DECODERS:
            result = _ATTR_DECODERS[number](value)
    return result


def _node(buf: bytes) -> Node:
    name, op, inputs, attr = "", "", [], {}
    for number, _, value in fields(buf):
        if number == 1:
            name = value.decode()
        elif number == 2:
            op = value.decode()
        elif number == 3:
            inputs.append(value.decode())
        elif number == 5:
            entry = dict((n, v) for n, _, v in fields(value))
            attr[entry.get(1, b"").decode()] = _attr_value(entry.get(2, b""))
    if not name or not op:
        raise GraphError(f"read_graph: a NodeDef without a name or op (name {name!r}, op {op!r})")
    return Node(name, op, tuple(inputs), attr)


def read_graph(data: bytes) -> list[Node]:
    """The nodes of a serialized ``GraphDef``, in file order.

    Raises:
        GraphError: the bytes are not a GraphDef (not a protobuf message, or a message without nodes).
    """
    try:
        nodes = [_node(value) for number, wire, value in fields(data) if number == 1 and wire == 2]
    except GraphError:
        raise
    except (WireError, UnicodeDecodeError) as e:
        raise GraphError(f"read_graph: not a TensorFlow GraphDef ({e})") from None
    if not nodes:
        raise GraphError(f"read_graph: no nodes in {len(data)} bytes; expected a TensorFlow GraphDef")
    return nodes
