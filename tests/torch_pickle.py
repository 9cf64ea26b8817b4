"""Writes legacy (non-zip) PyTorch checkpoints without torch, for the loader tests.

The layout follows the format's description in deltajax/models/weights.py:
magic, protocol, sys info, the object (tensors as ``_rebuild_tensor_v2`` calls
on persistent-id storages), the storage keys, then each storage's int64
element count and raw little-endian bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct

import numpy as np

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


class Global:
    """Pickled as the opcode GLOBAL ``module.name``, whatever is importable here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):
        raise AssertionError("only ever pickled")


class Tensor:
    """A tensor of ``storage`` (a flat array) with the given size, stride and offset."""

    def __init__(self, storage: np.ndarray, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    @classmethod
    def of(cls, a: np.ndarray) -> Tensor:
        a = np.array(a, order="C")  # ascontiguousarray would turn a 0-d array into 1-d
        return cls(a.reshape(-1), 0, a.shape, tuple(s // a.itemsize for s in a.strides))

    def __reduce__(self):
        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        return Global("torch._utils", "_rebuild_tensor_v2"), args


class _Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(self, f, storages: dict[int, tuple[str, np.ndarray]]):
        super().__init__(f, protocol=2)
        self.storages = storages

    def save_global_opcode(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = save_global_opcode

    def persistent_id(self, obj):
        if isinstance(obj, np.ndarray):
            key = self.storages.setdefault(id(obj), (str(len(self.storages)), obj))[0]
            return ("storage", Global("torch", _STORAGE_NAMES[obj.dtype]), key, "cpu", obj.size, None)
        return None


def dumps(obj, *, magic: int = 0x1950A86A20F9469CFC6C, protocol: int = 1001) -> bytes:
    """A legacy checkpoint of ``obj`` (Tensors inside become storages)."""
    f = io.BytesIO()
    storages: dict[int, tuple[str, np.ndarray]] = {}
    for header in (magic, protocol, {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}):
        pickle.dump(header, f, protocol=2)
    _Pickler(f, storages).dump(obj)
    pickle.dump([key for key, _ in storages.values()], f, protocol=2)
    for _, a in storages.values():
        f.write(struct.pack("<q", a.size))
        f.write(a.astype(a.dtype.newbyteorder("<")).tobytes())
    return f.getvalue()


def state_dict_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    return dumps(collections.OrderedDict((k, Tensor.of(v)) for k, v in arrays.items()))
