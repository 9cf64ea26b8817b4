"""Many streams over several devices: the stream axis ``N`` split over a device mesh, with no communication.

Streams are independent, so each device runs the whole delta step (every custom call, the per-frame mode
choice) on its own block of ``N / D`` streams inside ``jax.shard_map``; the parameters are replicated. A
stream's state never leaves its device: every state leaf is kept *stacked per device*, a global array of
``[D, *local_shape]`` split on its first axis, so scalars such as ``StreamState.restart`` (one per device:
each device picks its own frame mode) are sharded like the rest.

The mesh may have several axes (``('hosts', 'gpus')`` under ``jax.distributed``): the streams are split over
all of them, in the mesh's order.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

STREAMS = "streams"


def stream_mesh(devices=None) -> Mesh:
    """A one-axis mesh named ``'streams'`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("deltajax.sharding.stream_mesh: argument 'devices' must name at least one device, got none")
    return Mesh(np.asarray(devices), (STREAMS,))


def check_mesh(op: str, mesh) -> None:
    """Raises unless ``mesh`` is a ``jax.sharding.Mesh``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{op}: argument 'mesh' must be a jax.sharding.Mesh (or None), got {type(mesh).__name__}")


def check_streams(op: str, name: str, shape: tuple[int, ...], dim: int, mesh: Mesh) -> None:
    """Raises unless axis ``dim`` of ``shape`` (the streams) splits evenly over the mesh's devices."""
    if shape[dim] % mesh.size:
        raise ValueError(
            f"{op}: argument {name!r} has {shape[dim]} streams (axis {dim} of shape {shape}), expected a multiple "
            f"of the mesh's {mesh.size} devices; pad the stream axis or use a smaller mesh"
        )


def streams_spec(mesh: Mesh, dim: int) -> PartitionSpec:
    """Axis ``dim`` split over every axis of ``mesh``, the others replicated."""
    return PartitionSpec(*([None] * dim), mesh.axis_names)


def put_streams(x, mesh: Mesh, dim: int) -> jax.Array:
    """``x`` with its axis ``dim`` split over ``mesh`` (no copy when it already is)."""
    return jax.device_put(x, NamedSharding(mesh, streams_spec(mesh, dim)))


def put_replicated(tree, mesh: Mesh):
    """Every leaf of ``tree`` on every device of ``mesh`` (parameters)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def per_device(fn: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
    """``fn`` run by each device on its shards (``jax.shard_map``).

    Replication is not checked: deltajax's custom calls carry no replication rules, and nothing inside
    ``fn`` communicates.
    """
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


def stack(tree):
    """A device's pytree with a leading axis of 1 on every leaf: its block of the per-device stacked global."""
    return jax.tree_util.tree_map(lambda leaf: leaf[None], tree)


def unstack(tree):
    """Inverse of :func:`stack` (inside ``per_device``: a device's own block)."""
    return jax.tree_util.tree_map(lambda leaf: leaf[0], tree)
