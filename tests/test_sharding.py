"""Streams sharded over several devices (deltajax.sharding): the same outputs as unsharded runs, state that
stays on its devices, no communication in the compiled step.

The ``test_sharded_*`` tests run on every device of a process with 2, 4 or 8 of them (GPUs: scripts/gpu_multi.sh).
In an ordinary run (one device) ``test_on_8_cpu_devices`` runs them in a subprocess on 8 CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), so that the other tests' device count stays untouched.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import deltajax
from deltajax import sharding, video
from tests.flax_nets import init_model
from tests.harness import moving_blobs, rel_error

STREAMS = 16
DEVICES = jax.device_count()
FRAMES = 5
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
ENOUGH = DEVICES in (2, 4, 8)  # each device gets a block of the 8 and the 16 streams
on_several_devices = pytest.mark.skipif(not ENOUGH, reason="needs 2, 4 or 8 devices: run by test_on_8_cpu_devices")


def test_on_8_cpu_devices():
    if ENOUGH:
        pytest.skip(f"this process has {DEVICES} devices: the sharded tests run in it directly")
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8",
        "OMP_NUM_THREADS": "1",  # eight host devices share the cores
        "DELTAJAX_REQUIRE_GPU": "0",  # the child runs on the CPU alone, also under scripts/gpu_check.sh
    }
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        __file__,
        "-k",
        "sharded",
    ]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, timeout=600)
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and not re.search(r"skipped|failed|error", summary), report


@pytest.fixture(scope="module")
def model():
    clip = moving_blobs(FRAMES, STREAMS, 18, 22, 3, seed=3)
    module, variables = init_model("mobilenet", jnp.asarray(clip[0]))
    return module, variables, clip


def _mixed_clip(clip: np.ndarray, streams: int) -> np.ndarray:
    """``clip``'s first ``streams`` streams with device 0's streams still (its frames skip), device 1's
    streams changing everywhere every frame (its frames run densely above ``keyframe_above=0.5``) and the
    other devices' streams changing in one 16x16 input tile (a delta step)."""
    clip = clip[:, :streams].copy()
    local = streams // DEVICES
    clip[1:, :local] = clip[0, :local]
    moving = clip[:, 2 * local :, :16, :16].copy()
    clip[1:, 2 * local :] = clip[0, 2 * local :]
    clip[:, 2 * local :, :16, :16] = moving
    noise = np.random.default_rng(1).uniform(-1, 1, clip[:, local : 2 * local].shape).astype(clip.dtype)
    clip[:, local : 2 * local] += noise
    return clip


@on_several_devices
@pytest.mark.parametrize("streams", [8, 16])
def test_sharded_run_clip_equals_unsharded(model, streams):
    module, variables, clip = model
    clip = _mixed_clip(clip, streams)
    stepper = deltajax.delta(module.apply, config=deltajax.DeltaConfig(threshold=0.0, keyframe_above=0.5))
    mesh = sharding.stream_mesh()
    out, stats = deltajax.run_clip(stepper, clip, variables, with_stats=True, mesh=mesh)
    assert out.sharding == NamedSharding(mesh, PartitionSpec(None, "streams"))
    # Each device decides its own frame mode from its own streams: device 0 skips, device 1 runs densely.
    keyframe, active = np.asarray(stats["input"].keyframe), np.asarray(stats["input"].active)
    assert keyframe.shape == active.shape == (FRAMES, DEVICES)
    assert np.all(active[1:, 0] == 0) and np.all(keyframe[1:, 1]) and not np.any(keyframe[1:, 2:])
    # Bit for bit the unsharded run of each device's streams (the same modes, the same kernels) ...
    local = streams // DEVICES
    blocks = [deltajax.run_clip(stepper, clip[:, i : i + local], variables) for i in range(0, streams, local)]
    np.testing.assert_array_equal(np.asarray(out), np.concatenate([np.asarray(b) for b in blocks], axis=1))
    # ... and, within float rounding, the unsharded run of all streams at once, which picks one mode per frame
    # for all of them (dense XLA itself is not bitwise the same across batch sizes) and the dense model.
    whole = deltajax.run_clip(stepper, clip, variables)
    dense = jax.jit(jax.vmap(lambda x: module.apply(variables, x)))(clip)
    for t in range(FRAMES):
        assert rel_error(out[t], whole[t]) <= 1e-5 and rel_error(out[t], dense[t]) <= 1e-5


@on_several_devices
def test_sharded_stepper_serves_several_meshes(model):
    """One stepper, its programs traced per mesh: two axes (the streams split over both, as hosts x GPUs under
    jax.distributed), one axis, none."""
    module, variables, clip = model
    stepper = deltajax.delta(module.apply)
    grid = Mesh(np.asarray(jax.devices()).reshape(2, DEVICES // 2), ("hosts", "gpus"))
    two_axes = deltajax.run_clip(stepper, clip, variables, mesh=grid)
    assert two_axes.sharding == NamedSharding(grid, PartitionSpec(None, ("hosts", "gpus")))
    one_axis = deltajax.run_clip(stepper, clip, variables, mesh=sharding.stream_mesh())
    np.testing.assert_array_equal(np.asarray(two_axes), np.asarray(one_axis))
    assert rel_error(deltajax.run_clip(stepper, clip, variables), one_axis) <= 1e-5


@pytest.fixture(scope="module")
def streamed(model):
    """``(stepper, mesh, outputs, shardings, pointers, carry)``: the clip streamed frame by frame over the
    devices; per step the carry's shardings and layer states' buffers (donated carries are gone), the last carry."""
    module, variables, clip = model
    stepper, mesh = deltajax.delta(module.apply), sharding.stream_mesh()
    start, step = deltajax.streaming(stepper, variables, mesh=mesh)
    out, carry = start(clip[0])
    outs, shardings, pointers = [out], [], [_shard_pointers(carry)]
    for frame in clip[1:]:
        out, carry = step(carry, frame)
        outs.append(out)
        shardings.append([_placement(leaf) for leaf in jax.tree_util.tree_leaves(carry)])
        pointers.append(_shard_pointers(carry))
    return stepper, mesh, outs, shardings, pointers, carry


def _placement(leaf: jax.Array):
    """``(shape, sharding, [(device, shard shape)] in stream order)`` of a state leaf."""
    shards = sorted(leaf.addressable_shards, key=lambda s: s.index[0].start)
    return leaf.shape, leaf.sharding, [(s.device, s.data.shape) for s in shards]


def _shard_pointers(carry) -> list[list[int]]:
    """The device buffers of each layer state leaf of a ``streaming`` carry ``(t, StreamState)``, per shard."""
    leaves = jax.tree_util.tree_leaves(carry[1].layers)
    return [[s.data.unsafe_buffer_pointer() for s in leaf.addressable_shards] for leaf in leaves]


@on_several_devices
def test_sharded_streaming_state_stays_on_its_devices(model, streamed):
    _, variables, clip = model
    stepper, mesh, outs, shardings, pointers, _ = streamed
    on_streams = NamedSharding(mesh, PartitionSpec("streams"))
    for step in shardings:
        for shape, leaf_sharding, shards in step:
            assert shape[0] == DEVICES and leaf_sharding == on_streams
            assert [device for device, _ in shards] == list(mesh.devices)
            assert all(shard_shape == (1, *shape[1:]) for _, shard_shape in shards)
    # Donated per device: every layer's state was updated in place on each device, never copied or gathered.
    assert all(p == pointers[0] for p in pointers[1:])
    assert all(o.sharding == on_streams for o in outs)
    clip_out, _ = deltajax.run_clip(stepper, clip, variables, with_stats=True, mesh=mesh)
    # Within float rounding, not bit for bit: the streamed step has the parameters compiled in as constants,
    # which XLA may fold where run_clip's traced parameters are not.
    np.testing.assert_allclose(np.stack(outs), np.asarray(clip_out), rtol=1e-5, atol=1e-6)


@on_several_devices
def test_sharded_step_has_no_collectives(model, streamed):
    _, variables, clip = model
    stepper, mesh, *_, carry = streamed
    frame, args = sharding.put_streams(clip[1], mesh, 0), sharding.put_replicated((variables,), mesh)
    static = dict(model=stepper, keyframe_every=None, mesh=mesh)
    step = video._bound_stream_fns(args, None, **static)[1]
    step_hlo = step.lower(carry, frame).compile().as_text()
    clip_hlo = (
        video._run_clip.lower(sharding.put_streams(clip, mesh, 1), args, None, with_stats=True, **static)
        .compile()
        .as_text()
    )
    for hlo in (step_hlo, clip_hlo):
        assert not [c for c in COLLECTIVES if c in hlo]
        assert "deltajax_sparsify" in hlo, "the custom calls run inside the partitioned program"
        # Partitioned: the program sees one device's streams, never all of them.
        assert f"[{STREAMS // DEVICES},18,22,3]" in hlo and f"[{STREAMS},18,22,3]" not in hlo
    assert "input_output_alias" in step_hlo


@on_several_devices
def test_sharded_streams_must_split_evenly(model):
    module, variables, clip = model
    stepper = deltajax.delta(module.apply)
    mesh = sharding.stream_mesh()
    odd = DEVICES + 1
    with pytest.raises(ValueError, match=rf"run_clip: argument 'clip' has {odd} streams .* the mesh's {DEVICES} dev"):
        deltajax.run_clip(stepper, clip[:, :odd], variables, mesh=mesh)
    start, _ = deltajax.streaming(stepper, variables, mesh=mesh)
    with pytest.raises(ValueError, match=rf"streaming start: argument 'frame' has {odd} streams"):
        start(clip[0, :odd])


def test_mesh_must_be_a_mesh():
    stepper, clip = deltajax.delta(lambda x: 2 * x), np.zeros((2, 1, 4, 4, 1), np.float32)
    with pytest.raises(TypeError, match=r"run_clip: argument 'mesh' must be a jax.sharding.Mesh .* got list"):
        deltajax.run_clip(stepper, clip, mesh=jax.devices())
    with pytest.raises(TypeError, match=r"streaming: argument 'mesh' must be a jax.sharding.Mesh .* got str"):
        deltajax.streaming(stepper, mesh="streams")
    with pytest.raises(ValueError, match=r"stream_mesh: argument 'devices' must name at least one device"):
        sharding.stream_mesh([])
