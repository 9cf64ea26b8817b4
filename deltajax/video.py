"""Video: decoding clips into frame arrays (PyAV), and jit-compiled frame loops over delta models."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from importlib import resources
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec

from deltajax import _native, sharding

BUNDLED_CLIPS = {
    "asl": "asl_gestures_book.mkv",  # 640x480, 109 frames, a webcam (small: the tests use it)
    "people": "one-by-one-person-detection.mp4",  # 768x432, 1394 frames, a static camera (the demo's)
}
# Where a bundled clip's action begins: the person clip shows an empty scene for its first 75 frames.
ACTION_START = {"one-by-one-person-detection.mp4": 75}


def bundled_clip(name: str = "asl") -> str:
    """Path of a clip shipped with deltajax (see ``BUNDLED_CLIPS``; both CC-BY-4.0, Intel IoT devkit)."""
    if name not in BUNDLED_CLIPS:
        raise ValueError(f"bundled_clip: argument 'name' must be one of {sorted(BUNDLED_CLIPS)}, got {name!r}")
    return str(resources.files("deltajax") / "data" / BUNDLED_CLIPS[name])


def read_clip(
    path: str | os.PathLike | None = None,
    *,
    start: int = 0,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decodes a video file into RGB frames.

    Args:
      path: a video file PyAV (or, without PyAV, OpenCV) can open; None for the bundled ASL clip.
      start: skip this many frames first.
      max_frames: stop after this many frames.
      size: ``(height, width)`` to resize to (bilinear), or None.

    Returns:
      ``[T, H, W, 3]`` uint8, every decoded frame in presentation order
      (no frame-rate resampling, so no duplicated frames).
    """
    path = bundled_clip() if path is None else os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"read_clip: argument 'path' names no file: {path!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"read_clip: argument 'size' must be (height, width) of positive ints, got {size!r}")
    try:
        frames = _decode_pyav(path, start, max_frames, size)
    except ImportError:  # PyAV missing (e.g. an offline GPU machine): OpenCV decodes too
        frames = _decode_opencv(path, start, max_frames, size)
    if not frames:
        raise ValueError(f"read_clip: no video frames could be decoded from {path!r}")
    return np.stack(frames)


def time_shifted_streams(frames: np.ndarray, n: int) -> np.ndarray:
    """``[T, ...]`` frames as ``n`` camera streams ``[T, n, ...]``: stream ``s`` starts ``s * T // n`` frames
    later, wrapping around, so the streams differ while showing the same scene."""
    t = len(frames)
    return np.stack([np.roll(frames, -(s * t // n), axis=0) for s in range(n)], axis=1)


def _decode_pyav(path: str, start: int, max_frames: int | None, size) -> list[np.ndarray]:
    import av  # imported lazily: decoding is optional for the library itself

    frames = []
    with av.open(path) as container:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            if index < start:
                continue
            if size is not None:
                frame = frame.reformat(width=size[1], height=size[0])
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    return frames


def _decode_opencv(path: str, start: int, max_frames: int | None, size) -> list[np.ndarray]:
    try:
        import cv2
    except ImportError:
        raise ImportError("read_clip: needs PyAV (pip install av) or OpenCV to decode video") from None
    capture, frames, index = cv2.VideoCapture(path), [], 0
    try:
        while max_frames is None or len(frames) < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            if index >= start:
                if size is not None:
                    bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                frames.append(bgr[..., ::-1].copy())
            index += 1
    finally:
        capture.release()
    return frames


# -- frame loops ---------------------------------------------------------------------------------------------------
class StreamFns(NamedTuple):
    """A jitted pair for frames that arrive one by one.

    ``out, state = start(frame)`` runs the first frame densely (also: after a
    scene cut or a resolution change); ``out, state = step(state, frame)``
    runs one frame, donating ``state`` (its buffers are reused in place).
    """

    start: Callable
    step: Callable


def _with_frame(stepper, args: tuple, frame) -> tuple:
    """A stepper's call arguments: ``args`` (the model's others) with ``frame`` at its ``frame_argnum``."""
    pos = stepper.frame_argnum if stepper.frame_argnum >= 0 else len(args) + 1 + stepper.frame_argnum
    return (*args[:pos], frame, *args[pos:])


def _frame_pair(model, args: tuple, variables):
    """``(init, step)`` of a stepper or a delta Linen module, both returning ``(out, state)``.

    ``init(frame)`` starts a stream; ``step(state, frame, keyframe=False)`` runs one frame, densely (restarting
    the state) where ``keyframe`` is True. A stepper's steps compute no stats: the per-layer reductions would run
    at every frame.
    """
    from deltajax.transform import Stepper

    if isinstance(model, Stepper):

        def call(frame):
            return _with_frame(model, args, frame)

        def step(state, frame, keyframe=False):
            return model(state, *call(frame), keyframe=keyframe)

        return lambda frame: model.init(*call(frame)), step
    import flax.linen as nn

    from deltajax import linen

    if not isinstance(model, nn.Module):
        raise TypeError(
            "video loop: argument 'model' must be a deltajax.delta stepper, a flax.linen Module or a flax.nnx "
            f"Module, got {type(model).__name__}"
        )
    if variables is None:
        raise ValueError("video loop: argument 'variables' is required for a Linen module, got None")

    def init(frame):
        out, new = linen.start(model, variables, frame, *args)
        return out, new["delta_state"]

    def delta_step(state, frame):
        out, upd = model.apply({**variables, "delta_state": state}, frame, *args, mutable=["delta_state"])
        return out, upd["delta_state"]

    def step(state, frame, keyframe=False):
        if keyframe is False:
            return delta_step(state, frame)
        return lax.cond(keyframe, lambda s, f: init(f), delta_step, state, frame)

    return init, step


def _nnx_unbound(model, args: tuple) -> tuple:
    """An NNX model (module, ``deltajax.nnx.DeltaWrapper``, ``deltajax.delta(module)``) as ``(stepper, args)`` with
    the module's state as the stepper's first argument; any other model unchanged. Flax NNX loads only if needed."""
    from deltajax.transform import Stepper

    if isinstance(model, Stepper) or "flax.nnx" not in sys.modules:
        return model, args
    from deltajax import nnx

    return nnx.as_stepper(model, args) or (model, args)


def _on_devices(model, mesh: jax.sharding.Mesh | None):
    """A stepper as it runs on the mesh's platform, else JAX's default one (``Stepper.on_platform``: where every
    changed frame runs the plain model there, one whose state is the input's reference alone; a per-platform
    ``dense_from_stride`` resolved); other models as they are. Correct on any platform: such a stepper runs no
    delta step anywhere, and a dense tail changes only what a delta step costs."""
    from deltajax.transform import Stepper

    if not isinstance(model, Stepper):
        return model
    device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
    return model.on_platform(_native.platform_of(device))


def _check_keyframe_every(keyframe_every) -> None:
    """Raises unless ``keyframe_every`` is a positive int or None (the video loops' argument)."""
    if keyframe_every is not None and (not isinstance(keyframe_every, int) or keyframe_every < 1):
        raise ValueError(
            f"video loop: argument 'keyframe_every' must be a positive int or None, got {keyframe_every!r}"
        )


def _keyframed(step, keyframe_every: int | None):
    """A step on ``(t, state)`` that runs a dense keyframe every ``keyframe_every`` frames (never if None; the
    callers check it first, ``_check_keyframe_every``)."""

    def counted_step(carry, frame):
        t, state = carry
        keyframe = False if keyframe_every is None else t % keyframe_every == 0
        out, state = step(state, frame, keyframe=keyframe)
        return out, (t + 1, state)

    return counted_step


@functools.partial(jax.jit, static_argnames=("model", "keyframe_every", "with_stats", "mesh"))
def _run_clip(clip, args, variables, *, model, keyframe_every, with_stats, mesh):
    loop = functools.partial(_clip_loop, model=model, keyframe_every=keyframe_every, with_stats=with_stats)
    if mesh is None:
        return loop(clip, args, variables)

    def device_loop(clip, args, variables):  # this device's streams; stats [T] -> [T, 1] (one column per device)
        outs, stats = loop(clip, args, variables)
        return outs, jax.tree_util.tree_map(lambda s: s[:, None], stats)

    over_streams = sharding.streams_spec(mesh, 1)
    replicated = PartitionSpec()
    return sharding.per_device(device_loop, mesh, (over_streams, replicated, replicated), over_streams)(
        clip, args, variables
    )


def _clip_loop(clip, args, variables, *, model, keyframe_every, with_stats):
    """``(outputs [T, ...], stats of [T] or None)`` of one pass over ``clip`` (all streams it is given).

    A stepper takes the whole clip in one call (``Stepper.run_frames``: where no frame runs as a delta step, as
    with CUDA's crossover of 0, one decision, a device-to-host round trip on a GPU, for a clip whose frames all
    change or none); a Linen module, frame by frame in a scan."""
    from deltajax.transform import Stepper

    _check_keyframe_every(keyframe_every)
    if isinstance(model, Stepper):
        times = jnp.arange(len(clip), dtype=jnp.int32)
        keyframes = jnp.zeros(len(clip), jnp.bool_) if keyframe_every is None else times % keyframe_every == 0
        outs, _, stats = model.run_frames(*_with_frame(model, args, clip), keyframes=keyframes, with_stats=with_stats)
        return outs, stats
    init, step = _frame_pair(model, args, variables)
    counted_step = _keyframed(step, keyframe_every)
    out0, state = init(clip[0])

    def body(carry, frame):
        out, carry = counted_step(carry, frame)
        return carry, out

    outs = lax.scan(body, (jnp.int32(1), state), clip[1:])[1]
    return jax.tree_util.tree_map(lambda first, rest: jnp.concatenate([first[None], rest]), out0, outs), None


def run_clip(
    model,
    clip: jax.Array,
    *args,
    variables=None,
    keyframe_every: int | None = None,
    with_stats: bool = False,
    mesh: jax.sharding.Mesh | None = None,
):
    """Runs a delta model over a clip inside one ``jax.jit`` (``lax.scan`` over frames, state carried).

    Args:
      model: a ``deltajax.delta`` stepper, a Linen module built from
        ``deltajax.linen`` (or wrapping a model with ``deltajax.linen.DeltaWrapper``),
        or a Flax NNX module (any, run exactly, or a ``deltajax.nnx.DeltaWrapper``,
        run with its config; the module's variables are traced, not constants).
      clip: ``[T, N, H, W, C]``: ``T`` frames of ``N`` independent streams.
      *args: the model's other arguments (a stepper: its params, the frame
        goes at ``frame_argnum``; a module: arguments after the frame).
      variables: a Linen module's variables (``params``, ``batch_stats``).
      keyframe_every: run a dense keyframe every this many frames (None: only
        the first), bounding the error of thresholds > 0 even further.
      with_stats: also return per-layer, per-frame stats (steppers only).
      mesh: split the ``N`` streams over this mesh's devices
        (``deltajax.sharding.stream_mesh()``: all of them); ``N`` must be a
        multiple of the device count. Each device runs its own streams, with
        its own frame modes, and nothing is communicated; the model's
        outputs must have the streams as their first axis.

    Returns:
      The outputs stacked over frames (leading ``[T]``; with a mesh, split
      over it on the stream axis), and, with ``with_stats``,
      ``{layer: deltajax.stats.LayerStats}`` of ``[T]`` arrays (with a mesh,
      ``[T, D]``: one column per device, over that device's streams).

    Example:
      >>> stepper = deltajax.delta(model.apply)
      >>> outs = run_clip(stepper, clip, variables)
    """
    if np.ndim(clip) != 5:
        raise ValueError(
            f"run_clip: argument 'clip' must be [T, N, H, W, C], expected rank 5, got shape {tuple(np.shape(clip))}"
        )
    model, args = _nnx_unbound(model, args)
    if with_stats and not hasattr(model, "step_with_stats"):
        raise ValueError("run_clip: with_stats=True needs a deltajax.delta stepper, got a Linen module")
    if mesh is None:
        clip = jnp.asarray(clip)
    else:
        sharding.check_mesh("run_clip", mesh)
        sharding.check_streams("run_clip", "clip", tuple(np.shape(clip)), 1, mesh)
        clip, args, variables = sharding.put_streams(clip, mesh, 1), *sharding.put_replicated((args, variables), mesh)
    model = _on_devices(model, mesh)
    outs, stats = _run_clip(
        clip, args, variables, model=model, keyframe_every=keyframe_every, with_stats=with_stats, mesh=mesh
    )
    return (outs, stats) if with_stats else outs


def streaming(
    model, *args, variables=None, keyframe_every: int | None = None, mesh: jax.sharding.Mesh | None = None
) -> StreamFns:
    """Jitted ``start`` / ``step`` for frames arriving one by one, the state donated.

    Args:
      model, *args, variables, keyframe_every, mesh: as for ``run_clip``.
        With a mesh, the frames ``[N, H, W, C]`` and the outputs are split
        over it on ``N``, and every state leaf is each device's own state
        stacked on a leading device axis (``[D, ...]``, split over the mesh):
        it stays on its device from step to step, donated there.
        ``args`` and ``variables`` (an NNX module's variables too) are bound
        here, compiled into the step as constants: a later change to them
        needs a new ``streaming`` call (and a new compile).

    Returns:
      ``StreamFns(start, step)``: ``out, state = start(frame)`` (dense, the one
      call that starts or restarts a stream), ``out, state = step(state, frame)``.

    Example:
      >>> start, step = streaming(stepper, variables)
      >>> out, state = start(frames[0])
      >>> for frame in frames[1:]:
      ...     out, state = step(state, frame)
    """
    _check_keyframe_every(keyframe_every)  # before the first frame arrives
    model, args = _nnx_unbound(model, args)
    if mesh is not None:
        sharding.check_mesh("streaming", mesh)
    model = _on_devices(model, mesh)
    # A snapshot: the functions trace at their first calls, by when the caller's containers may have changed.
    args, variables = jax.tree_util.tree_map(jnp.asarray, (args, variables))
    start, step = _bound_stream_fns(args, variables, model=model, keyframe_every=keyframe_every, mesh=mesh)
    if mesh is None:
        return StreamFns(start, step)

    def put(op: str, frame):
        sharding.check_streams(op, "frame", tuple(np.shape(frame)), 0, mesh)
        return sharding.put_streams(frame, mesh, 0)

    return StreamFns(
        lambda frame: start(put("streaming start", frame)),
        lambda state, frame: step(state, put("streaming step", frame)),
    )


def _bound_stream_fns(args, variables, *, model, keyframe_every, mesh) -> tuple[Callable, Callable]:
    """Jitted ``start(frame)`` and ``step(state, frame)`` (the state donated) with ``args`` and ``variables``
    bound as compile-time constants.

    A streamed call then passes the state and the frame only: passing EfficientNet-Lite0's 247 parameter arrays
    at every call made a step with no change cost 0.69 ms on an H200 (bf16, 1x768x432), 0.31 ms bound.
    """

    def start(frame):
        out, state = _frame_pair(model, args, variables)[0](frame)
        return out, (jnp.int32(1), state)

    def step(state, frame):
        out, state = _keyframed(_frame_pair(model, args, variables)[1], keyframe_every)(state, frame)
        return out, state

    return (
        jax.jit(_per_device_frame(start, mesh, takes_state=False)),
        jax.jit(_per_device_frame(step, mesh, takes_state=True), donate_argnums=0),
    )


def _per_device_frame(fn: Callable, mesh, *, takes_state: bool) -> Callable:
    """``fn([state,] frame) -> (out, state)``, run by each device of ``mesh`` on its streams.

    The frame ``[N, H, W, C]`` and the outputs are split on ``N``, the state is stacked per device
    (``deltajax.sharding.stack``); what ``fn`` closes over is replicated. Without a mesh: ``fn`` itself.
    """
    if mesh is None:
        return fn

    def device_fn(*inputs):
        if takes_state:
            inputs = (sharding.unstack(inputs[0]), *inputs[1:])
        out, state = fn(*inputs)
        return out, sharding.stack(state)

    streams = sharding.streams_spec(mesh, 0)
    return sharding.per_device(device_fn, mesh, (streams,) * (2 if takes_state else 1), streams)
