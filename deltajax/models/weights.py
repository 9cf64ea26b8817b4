"""Read PyTorch checkpoints (state dicts) into NumPy, without torch.

Only the legacy (non-zip) serialisation is supported: it is what both bundled
weight packages use. That format is five consecutive pickles followed by raw
bytes::

    magic number | protocol version | sys info | the object | storage keys
    then, per storage key in that order: int64 element count + raw elements

Tensors inside "the object" point at storages through pickle persistent ids;
their bytes come after the pickles, so tensors are rebuilt lazily and filled
in once every storage has been read.

The unpickler is restricted: ``find_class`` resolves only the few globals a
state dict needs, each mapped to a local stand-in, so a checkpoint cannot run
code on load. Anything else is refused with a :class:`CheckpointError` that
names the file and the refused global.

Example:
    >>> from deltajax.models.weights import load_state_dict
    >>> sd = load_state_dict("efficientnet-lite0-57934424.pth")  # doctest: +SKIP
    >>> sd["conv_stem.weight"].shape  # doctest: +SKIP
    (32, 3, 3, 3)
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np

__all__ = ["CheckpointError", "load_state_dict", "state_dict_from_bytes"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Storage class name -> element dtype (endianness is applied from sys info).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype(np.float64),
    "FloatStorage": np.dtype(np.float32),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}


class CheckpointError(ValueError, pickle.UnpicklingError):
    """A checkpoint file is corrupted, truncated, foreign or unsafe."""


class _StorageType:
    """Stand-in for ``torch.<X>Storage`` classes: only carries the dtype."""

    def __init__(self, name: str, dtype: np.dtype):
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_TYPES = {name: _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()}


class _Storage:
    """A storage whose bytes are read after the object pickle."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key = key
        self.dtype = dtype
        self.numel = numel
        self.data: np.ndarray | None = None


class _StorageView:
    """A legacy storage view: ``numel`` elements of ``root`` from ``offset``."""

    def __init__(self, root: _Storage, offset: int, numel: int):
        self.root = root
        self.offset = offset
        self.numel = numel


class _LazyTensor:
    """What ``_rebuild_tensor_v2`` returns until storages are loaded."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any):
        if not isinstance(storage, _Storage | _StorageView):
            raise TypeError(f"tensor storage must come from a persistent id, got {type(storage).__name__}")
        for name, value in (("size", size), ("stride", stride)):
            if not (isinstance(value, tuple) and all(isinstance(v, int) and v >= 0 for v in value)):
                raise TypeError(f"tensor {name} must be a tuple of non-negative ints, got {value!r}")
        if len(size) != len(stride):
            raise TypeError(f"tensor size {size} and stride {stride} differ in rank")
        if not isinstance(offset, int) or offset < 0:
            raise TypeError(f"tensor storage offset must be a non-negative int, got {offset!r}")
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def materialize(self) -> np.ndarray:
        storage, offset = self.storage, self.offset
        if isinstance(storage, _StorageView):
            if storage.offset + storage.numel > storage.root.numel:
                raise ValueError(f"storage view {storage.root.key} runs past its root storage")
            offset += storage.offset
            storage, numel = storage.root, storage.numel + storage.offset
        else:
            numel = storage.numel
        flat = storage.data
        assert flat is not None, "storages are read before tensors are materialised"
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype.newbyteorder("="))
        count = int(np.prod(self.size, dtype=np.int64))
        if count > numel:
            # Only broadcast (stride-0) views read fewer elements than they hold; no state dict needs them,
            # and a forged size could otherwise make the copy below exhaust memory.
            raise ValueError(f"tensor of size {self.size} has more elements than its storage {storage.key} ({numel})")
        last = offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= numel:
            raise ValueError(
                f"tensor of size {self.size}, stride {self.stride}, offset {offset} reads element {last} "
                f"of storage {storage.key}, which holds {numel}"
            )
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=self.size, strides=tuple(s * item for s in self.stride), writeable=False
        )
        return np.array(view, dtype=flat.dtype.newbyteorder("="), order="C")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _LazyTensor):
        raise TypeError(f"a Parameter must wrap a tensor, got {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data)


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``_ALLOWED_GLOBALS``; storages come as persistent ids."""

    def __init__(self, file: BinaryIO, source: str, storages: dict[str, _Storage] | None):
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self._source}: refused to load global '{module}.{name}': only tensors, parameters and "
                "OrderedDicts of a PyTorch state dict are allowed (the file is foreign or unsafe)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise CheckpointError(f"{self._source}: unexpected persistent id {pid!r} in the checkpoint header")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise CheckpointError(f"{self._source}: unsupported persistent id {pid!r} (expected a legacy storage)")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self._source}: persistent id {pid!r} names no known storage type")
        if not (isinstance(key, str) and isinstance(numel, int) and numel >= 0):
            raise CheckpointError(f"{self._source}: malformed storage id {pid!r}")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type.dtype, numel)
        elif storage.dtype != storage_type.dtype or storage.numel != numel:
            raise CheckpointError(f"{self._source}: storage {key} is declared twice with different types or sizes")
        if view_metadata is None:
            return storage
        if not (
            isinstance(view_metadata, tuple)
            and len(view_metadata) == 3
            and all(isinstance(v, int) for v in view_metadata[1:])
        ):
            raise CheckpointError(f"{self._source}: malformed storage view {view_metadata!r}")
        _view_key, offset, view_numel = view_metadata
        return _StorageView(storage, offset, view_numel)


def _load_pickle(f: BinaryIO, source: str, what: str, storages: dict[str, _Storage] | None = None) -> Any:
    try:
        return _RestrictedUnpickler(f, source, storages).load()
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        RecursionError,
        MemoryError,
    ) as e:
        raise CheckpointError(f"{source}: could not read the {what} (truncated or corrupted file): {e}") from e


def _walk(obj: Any, fn: Callable[[_LazyTensor], Any]) -> Any:
    if isinstance(obj, _LazyTensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return type(obj)((k, _walk(v, fn)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_walk(v, fn) for v in obj)
    return obj


def _read_legacy(f: BinaryIO, source: str, size: int) -> Any:
    magic = _load_pickle(f, source, "magic number")
    if magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{source}: not a PyTorch checkpoint (bad magic number {magic!r})")
    protocol = _load_pickle(f, source, "protocol version")
    if protocol != _LEGACY_PROTOCOL:
        raise CheckpointError(f"{source}: unsupported legacy protocol version {protocol!r} (expected 1001)")
    sys_info = _load_pickle(f, source, "sys info")
    if not isinstance(sys_info, dict) or not isinstance(sys_info.get("little_endian"), bool):
        raise CheckpointError(f"{source}: malformed sys info {sys_info!r}")
    order = "<" if sys_info["little_endian"] else ">"

    storages: dict[str, _Storage] = {}
    obj = _load_pickle(f, source, "state dict", storages)
    keys = _load_pickle(f, source, "storage keys")
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)) or sorted(keys) != sorted(storages):
        raise CheckpointError(f"{source}: storage key list does not match the storages the tensors use")

    for key in keys:
        storage = storages[key]
        header = f.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{source}: truncated file: storage {key} has no size header")
        (numel,) = struct.unpack(order + "q", header)
        if numel != storage.numel:
            raise CheckpointError(f"{source}: storage {key} holds {numel} elements, the tensors expect {storage.numel}")
        dtype = storage.dtype.newbyteorder(order)
        nbytes = numel * dtype.itemsize
        if nbytes > size - f.tell():
            raise CheckpointError(
                f"{source}: truncated file: storage {key} needs {nbytes} bytes past offset {f.tell()}"
            )
        storage.data = np.frombuffer(f.read(nbytes), dtype=dtype)
    if f.read(1):
        raise CheckpointError(f"{source}: unexpected bytes after the last storage (corrupted file)")

    def materialize(t: _LazyTensor) -> np.ndarray:
        try:
            return t.materialize()
        except ValueError as e:
            raise CheckpointError(f"{source}: {e}") from e

    return _walk(obj, materialize)


def _read(f: BinaryIO, source: str, size: int) -> dict[str, np.ndarray]:
    head = f.read(4)
    f.seek(0)
    if head.startswith(b"PK\x03\x04"):
        raise CheckpointError(
            f"{source}: this is a zip-format PyTorch checkpoint; only the legacy format is supported "
            "(re-save it with torch.save(..., _use_new_zipfile_serialization=False))"
        )
    if not head.startswith(b"\x80"):
        raise CheckpointError(f"{source}: not a PyTorch checkpoint (does not start with a pickle)")
    obj = _read_legacy(f, source, size)
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise CheckpointError(f"{source}: the checkpoint is not a state dict of named tensors")
    return dict(obj)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a legacy PyTorch ``state_dict`` file into NumPy arrays, without torch.

    Args:
        path: a ``.pth`` file written by ``torch.save(model.state_dict(), ...)``
            in the legacy (non-zip) format.

    Returns:
        A dict from parameter name (``"features.0.0.weight"``) to a C-contiguous
        NumPy array in PyTorch layout (convolutions OIHW, linear [out, in]).

    Raises:
        CheckpointError: (a ``ValueError``) when the file is truncated,
            corrupted, not a state dict, or refers to any global besides
            tensors, parameters and OrderedDicts.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        return _read(f, path, os.fstat(f.fileno()).st_size)


def state_dict_from_bytes(data: bytes, source: str = "<bytes>") -> dict[str, np.ndarray]:
    """Like :func:`load_state_dict`, from the file's bytes; ``source`` names it in errors."""
    return _read(io.BytesIO(data), source, len(data))
