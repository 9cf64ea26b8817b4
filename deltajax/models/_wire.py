"""A reader of the protocol-buffer wire format (no protobuf package): fields of one serialized message.

A message is a sequence of ``(tag, value)`` records, ``tag = field_number << 3 | wire_type``. Wire types:
0 varint, 1 fixed 64-bit, 2 length-delimited bytes (strings, sub-messages, packed repeated scalars),
5 fixed 32-bit. Groups (3, 4) are obsolete and refused.

Example:
    >>> list(fields(bytes([0x08, 0x96, 0x01, 0x12, 0x02, 0x68, 0x69])))
    [(1, 0, 150), (2, 2, b'hi')]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["WireError", "fields", "packed", "to_signed", "varint"]


class WireError(ValueError):
    """A buffer that is not a well-formed protocol-buffer message."""


def varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``buf[pos:]`` and the position after it."""
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise WireError(f"protobuf: varint runs past the end of the buffer ({len(buf)} bytes)")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError(f"protobuf: varint at byte {pos} is longer than 10 bytes")


def to_signed(value: int) -> int:
    """An int64 field's varint (two's complement in 64 bits) as a Python int."""
    return value - (1 << 64) if value >= 1 << 63 else value


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes]]:
    """Yields ``(field_number, wire_type, value)`` for each record of a message.

    ``value`` is an int for wire types 0, 1 and 5 (the raw bits for fixed types) and ``bytes`` for 2.
    """
    buf = memoryview(buf)
    pos = 0
    while pos < len(buf):
        tag, pos = varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"protobuf: field number 0 at byte {pos}")
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise WireError(f"protobuf: fixed{size * 8} field {number} runs past the end of the buffer")
            value = int.from_bytes(buf[pos : pos + size], "little")
            pos += size
        elif wire == 2:
            size, pos = varint(buf, pos)
            if pos + size > len(buf):
                raise WireError(
                    f"protobuf: field {number} claims {size} bytes, only {len(buf) - pos} left in the buffer"
                )
            value = bytes(buf[pos : pos + size])
            pos += size
        else:
            raise WireError(f"protobuf: field {number} has wire type {wire}, expected 0, 1, 2 or 5")
        yield number, wire, value


def packed(wire: int, value: int | bytes, dtype: str) -> np.ndarray:
    """The values of one record of a repeated scalar field, packed (wire type 2) or not.

    Args:
        wire, value: a record from :func:`fields`.
        dtype: ``"f4"``, ``"f8"`` (fixed) or ``"varint"`` (int64 / int32 / bool / enum).
    """
    if dtype == "varint":
        if wire == 0:
            return np.asarray([to_signed(value)], np.int64)
        out, pos = [], 0
        while pos < len(value):
            v, pos = varint(value, pos)
            out.append(to_signed(v))
        return np.asarray(out, np.int64)
    size = np.dtype(dtype).itemsize
    raw = value if wire == 2 else int(value).to_bytes(size, "little")
    if len(raw) % size:
        raise WireError(f"protobuf: packed {dtype} field holds {len(raw)} bytes, not a multiple of {size}")
    return np.frombuffer(raw, "<" + dtype).copy()
