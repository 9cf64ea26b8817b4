"""``deltajax.delta(fn)``: any JAX function of parameters and a frame, run as a delta model."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from deltajax import ops
from deltajax.ops._delta import SUPPORTED_DTYPES
from deltajax.stats import layer_stats
from deltajax.stats import pack as layer_stats_pack
from deltajax.stats import unpack as layer_stats_unpack
from deltajax.transform import _frames
from deltajax.transform._interpret import INPUT, Run, StateMismatch, frame_independent, input_config, trace
from deltajax.transform.config import PLATFORMS, DeltaConfig

CHECK_UNROLL = 8  # frames per trip of the input check's loop where no frame runs as a delta step


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class StreamState:
    """The state of one stream (a batch of ``N`` independent videos) of a transformed model.

    Attributes:
      layers: layer name -> that layer's state (fixed shapes, float32); the input's alone where no frame runs
        as a delta step (``Stepper.never_delta``).
      output: the last frame's output (a frame with no input change returns it without running the model).
      restart: bool scalar, True when the layers' state is stale (the last changed frame ran the plain model:
        a non-finite or a busy one): the next changed frame is a keyframe.
      age: int32 scalar, delta steps since the layers' state was built (``DeltaConfig.refresh_every``).
      nonfinite: bool scalar, True when the last frame held non-finite values: the next frame runs densely
        even where it equals the one before (the last output is the non-finite frame's), its input compared
        with itself rather than with a reference that may hold the non-finite values.
      frame_shape: ``(N, H, W, C)`` of the frames this stream was started with (static).
      frame_dtype: their dtype name (static).
    """

    layers: dict
    output: Any
    restart: jax.Array
    age: jax.Array
    nonfinite: jax.Array
    frame_shape: tuple[int, ...]
    frame_dtype: str

    def tree_flatten(self):
        return (self.layers, self.output, self.restart, self.age, self.nonfinite), (self.frame_shape, self.frame_dtype)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)


def _spec(x) -> tuple[tuple[int, ...], str]:
    return tuple(np.shape(x)), np.dtype(x.dtype).name


class Stepper:
    """A traced function run as a delta program. Create with ``deltajax.delta``.

    ``out, state = stepper.init(*args)`` runs the first frame densely;
    ``out, state = stepper(state, *args)`` runs one delta frame (pure: jit it
    with ``donate_argnums=0``). ``*args`` are ``fn``'s arguments; the one at
    ``frame_argnum`` is the frame ``[N, H, W, C]``, the others stay the same.
    """

    def __init__(self, fn: Callable, frame_argnum: int, config: DeltaConfig):
        self.fn, self.frame_argnum, self.config = fn, frame_argnum, config
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"deltajax.delta({getattr(self.fn, '__qualname__', self.fn)!r}, frame_argnum={self.frame_argnum})"

    # -- tracing ---------------------------------------------------------------------------------------------------
    def _frame_pos(self, args: tuple) -> int:
        pos = self.frame_argnum if self.frame_argnum >= 0 else len(args) + self.frame_argnum
        if not 0 <= pos < len(args):
            raise ValueError(
                f"deltajax.delta: frame_argnum={self.frame_argnum} names no argument of a call with {len(args)}"
            )
        return pos

    def _frame_arg(self, op: str, args: tuple, what: str, layout: str, rank: int):
        """``(position, value)`` of the argument at ``frame_argnum``, once it is an array of ``rank`` axes (``what``
        and ``layout`` name it and its axes in the error)."""
        pos = self._frame_pos(args)
        value = args[pos]
        if not hasattr(value, "shape") or np.ndim(value) != rank:
            raise ValueError(
                f"{op}: argument args[{pos}] ({what}) must be {layout}, "
                f"got {type(value).__name__} of shape {tuple(np.shape(value))}"
            )
        return pos, value

    def _frame(self, op: str, args: tuple):
        pos, frame = self._frame_arg(op, args, "the frame", "an NHWC array [N, H, W, C]", 4)
        if np.dtype(frame.dtype) not in SUPPORTED_DTYPES:
            raise ValueError(
                f"{op}: argument args[{pos}] (the frame) has dtype {np.dtype(frame.dtype).name}, expected one of "
                f"{[d.name for d in SUPPORTED_DTYPES]}; convert it first, e.g. frame.astype(jnp.float32)"
            )
        return pos, frame

    def _program(self, args: tuple):
        pos = self._frame_pos(args)
        key = self._program_key(args)
        if key not in self._cache:
            frame_index = len(jax.tree_util.tree_leaves(args[:pos]))
            self._cache[key] = (*trace(self.fn, _abstract(args), frame_index), frame_index)
        return self._cache[key]

    def _run(self, args: tuple, layers: dict | None, input_delta=None, refresh=None, known=None):
        program, analysis, out_tree, frame_index = self._program(args)
        run = Run(program, analysis, self.config, layers, input_delta, refresh, known)
        try:
            outs = run.run(jax.tree_util.tree_leaves(args), frame_index)
        except StateMismatch as e:
            if set(layers) == {INPUT}:
                raise ValueError(
                    "deltajax.delta step: argument 'state' holds the input's reference alone (a stream started "
                    "where no frame runs as a delta step: keyframe_above=0, or run_clip / streaming on a platform "
                    "whose crossover is 0), but this stepper runs delta steps, which read every layer's state; "
                    "start the stream with this stepper's init, or step it with stepper.on_platform(platform)"
                ) from None
            raise ValueError(
                f"deltajax.delta step: argument 'state' has no layer {e.args[0]!r}; it was not made by "
                f"stepper.init of this model and these argument shapes; start the stream with stepper.init(*args)"
            ) from None
        if layers is not None and set(layers) != set(run.states):
            extra = sorted(set(layers) - set(run.states))
            raise ValueError(
                f"deltajax.delta step: argument 'state' holds layers {extra} this model does not have; "
                "start the stream with stepper.init(*args)"
            )
        self.config.check_names(self._configurable(args, run))
        return jax.tree_util.tree_unflatten(out_tree, outs), run

    def _configurable(self, args: tuple, run: Run) -> dict[str, str]:
        """The layers ``config.layers`` may name (name -> kind): ``run``'s, and where ``config.dense_from_stride``
        runs some densely, also the layers they would be (one abstract pass without the dense tail, cached)."""
        if self.config.dense_from_stride is None or not self.config.layers:
            return run.kinds
        key = ("kinds without the dense tail", *self._program_key(args))
        if key not in self._cache:
            program, analysis, _, frame_index = self._program(args)
            config = dataclasses.replace(self.config, dense_from_stride=None, layers=())
            full = Run(program, analysis, config, None)
            jax.eval_shape(lambda *a: full.run(jax.tree_util.tree_leaves(a), frame_index), *_abstract(args))
            self._cache[key] = full.kinds
        return {**self._cache[key], **run.kinds}

    def _static_stats(self, args: tuple) -> dict:
        """Layer name -> (dense multiply-adds, fallback), from one abstract dense pass (cached per program)."""
        key = ("static_stats", *self._program_key(args))
        if key not in self._cache:
            runs = []

            def probe(*a):
                _, run = self._run(a, None)
                runs.append(run)
                return 0

            jax.eval_shape(probe, *args)
            self._cache[key] = runs[0].static_stats
        return self._cache[key]

    def _program_key(self, args: tuple):
        leaves, treedef = jax.tree_util.tree_flatten(args)
        # A program traced inside shard_map belongs to that mesh (its avals name the mesh's manual axes).
        return treedef, tuple(_spec(x) for x in leaves), jax.sharding.get_abstract_mesh()

    def _dense(self, args: tuple, known=None):
        """A dense frame: ``(output, layer states, stats)`` of a fresh start (``known``: as for ``Run``)."""
        out, run = self._run(args, None, known=known)
        return out, run.states, run.stats

    def _known(self, args: tuple) -> dict:
        """The program's frame-independent values for ``args`` (``_interpret.frame_independent``)."""
        program, _, _, frame_index = self._program(args)
        return frame_independent(program, jax.tree_util.tree_leaves(args), frame_index)

    def _plain_start(self, args: tuple, frame):
        """A fresh start where no frame runs as a delta step (``_frames.never_delta``): ``(output, layer states,
        stats)`` of the plain model, the states the input's reference alone (no mode reads another layer's: the
        state stays small, and a streamed call passes a few arrays rather than every layer's), the stats a dense
        frame's. The layers' names in ``config`` are checked against the model's all the same."""
        _, input_state = ops.sparsify_init(frame)
        return self.fn(*args), {INPUT: input_state}, _frame_stats(self._static_stats(args), 1.0, True)

    def on_platform(self, platform: str) -> Stepper:
        """This stepper as it runs on ``platform`` ('cpu', 'cuda', ...: a lax.platform_dependent name): where
        ``config.keyframe_above`` sets a crossover of 0 there, a stepper with ``keyframe_above=0.0``, whose
        streams keep only the input's reference as state (every changed frame runs the plain model there, so no
        other layer's state is ever read); where ``config.dense_from_stride`` is set per platform, that
        platform's value; else this stepper. The same object for the same platform, so that a jit keyed on the
        stepper compiles once."""
        if platform not in PLATFORMS:
            raise ValueError(
                f"deltajax.delta on_platform: argument 'platform' must be one of {list(PLATFORMS)} (the names "
                f"lax.platform_dependent takes; _native.platform_of(device) gives a device's), got {platform!r}"
            )
        resolved = {}
        if not self.never_delta and _frames.crossover_on(self.config.keyframe_above, platform) == 0:
            resolved["keyframe_above"] = 0.0
        if isinstance(self.config.dense_from_stride, tuple):
            resolved["dense_from_stride"] = self.config.dense_from_stride_on(platform)
        if not resolved:
            return self
        key = ("on_platform", platform)
        if key not in self._cache:
            self._cache[key] = type(self)(self.fn, self.frame_argnum, dataclasses.replace(self.config, **resolved))
        return self._cache[key]

    @property
    def never_delta(self) -> bool:
        """True when no frame runs as a delta step on any platform (``keyframe_above`` 0): the stream's state is
        then the input's reference alone."""
        return _frames.never_delta(self.config.keyframe_above)

    # -- public ----------------------------------------------------------------------------------------------------
    def init_with_stats(self, *args) -> tuple[Any, StreamState, dict]:
        """Like ``init``, also returning the per-layer stats of the dense frame."""
        _, frame = self._frame("deltajax.delta init", args)
        out, layers, stats = self._plain_start(args, frame) if self.never_delta else self._dense(args)
        nonfinite = _frames.count_nonfinite(frame)
        stats[INPUT] = stats[INPUT]._replace(nonfinite=nonfinite)
        return out, StreamState(layers, out, nonfinite > 0, jnp.int32(0), nonfinite > 0, *_spec(frame)), stats

    def init(self, *args) -> tuple[Any, StreamState]:
        """Starts (or restarts) a stream: runs ``fn(*args)`` densely and returns ``(output, state)``."""
        out, state, _ = self.init_with_stats(*args)
        return out, state

    def step_with_stats(self, state: StreamState, *args, keyframe=False) -> tuple[Any, StreamState, dict]:
        """Like ``__call__``, also returning ``{layer name: deltajax.stats.LayerStats}`` of this frame.

        ``keyframe`` (a bool, traced or not) forces a dense frame that restarts the state.
        """
        return self._step(state, args, keyframe, with_stats=True)

    def step_frames(self, state: StreamState, *args, keyframes=None, with_stats: bool = False):
        """``K`` frames in one call: ``(outputs [K, ...], state, stats)``, what ``K`` calls of ``step_with_stats``
        give (the outputs to float rounding: XLA may fuse the model differently inside a loop); the stats
        ``{layer name: LayerStats}`` of ``[K]`` arrays with ``with_stats``, else None.

        ``args[frame_argnum]`` holds the frames ``[K, N, H, W, C]`` (each like a step's frame); ``keyframes``, a
        ``[K]`` bool array (default: none), forces keyframes. Where no frame runs as a delta step
        (``never_delta``: a crossover of 0, as on CUDA under ``Stepper.on_platform``) one scan over the input
        alone (no model) gives every frame's mode, and one ``lax.switch`` decides the ``K`` frames: all skipped
        (the last output again), all changed (the plain model over them in one ``lax.map``), or some of each (in
        chunks of ``_frames.CHUNK``, decided the same way, a mixed chunk's changed frames one by one). On a GPU
        every decision is a device-to-host round trip (12-38 us on an H200), so a clip whose frames all change
        costs about what the plain model in a ``lax.map`` does, and a still one a round trip. Other steppers scan
        ``step_with_stats``.
        """
        args_of, frames, keyframes = self._frames_call("deltajax.delta step_frames", args, keyframes)
        self._check_step(state, args_of(frames[0]))
        if self.never_delta:
            return self._skip_or_dense_frames(state, args_of, frames, keyframes, with_stats, fresh=False)
        return self._scan_steps(state, args_of, frames, keyframes, with_stats)

    def run_frames(self, *args, keyframes=None, with_stats: bool = False):
        """A stream started on the first of ``K`` frames and stepped through the others, in one call:
        ``(outputs [K, ...], state, stats)``, what ``init_with_stats`` and ``K - 1`` calls of ``step_with_stats``
        give (arguments, stats and rounding as for ``step_frames``; ``keyframes[0]`` changes nothing: a stream's
        first frame is dense).

        Where no frame runs as a delta step the first frame runs with the others (a forced dense frame whose input
        reference is itself), so a clip whose frames all change is one ``lax.map`` of the plain model over every
        frame: dense XLA's own loop, the model compiled once less and its loop-invariant work (on a GPU, the
        dense convolutions' weight-layout transposes) done once.
        """
        args_of, frames, keyframes = self._frames_call("deltajax.delta run_frames", args, keyframes)
        first = args_of(frames[0])
        self._frame("deltajax.delta run_frames", first)
        if self.never_delta:
            state = self._fresh_plain_state(first, frames[0])
            return self._skip_or_dense_frames(state, args_of, frames, keyframes, with_stats, fresh=True)
        out, state, stats = self.init_with_stats(*first)
        stats = stats if with_stats else None
        if len(frames) == 1:
            return (
                jax.tree_util.tree_map(lambda a: a[None], out),
                state,
                jax.tree_util.tree_map(lambda a: a[None], stats),
            )
        outs, state, rest = self._scan_steps(state, args_of, frames[1:], keyframes[1:], with_stats)

        def joined(a, b):
            return jnp.concatenate([a[None], b])

        return jax.tree_util.tree_map(joined, out, outs), state, jax.tree_util.tree_map(joined, stats, rest)

    def _frames_call(self, op: str, args: tuple, keyframes):
        """``(args_of, frames, keyframes)`` of a call on ``K`` frames, checked: ``args_of(frame)`` puts one frame
        back among ``args``; ``keyframes`` a ``[K]`` bool array (all False for None)."""
        pos, frames = self._frame_arg(op, args, "the frames", "[K, N, H, W, C]", 5)
        count = frames.shape[0]
        keyframes = jnp.zeros((count,), jnp.bool_) if keyframes is None else jnp.asarray(keyframes)
        if keyframes.shape != (count,) or keyframes.dtype != jnp.bool_:
            raise ValueError(
                f"{op}: argument 'keyframes' must be a bool array of shape ({count},) (one per frame), got "
                f"{keyframes.dtype.name} of shape {keyframes.shape}"
            )

        def args_of(frame):
            return (*args[:pos], frame, *args[pos + 1 :])

        return args_of, frames, keyframes

    def _scan_steps(self, state: StreamState, args_of: Callable, frames, keyframes, with_stats: bool):
        """``step_frames`` of a stepper that may run delta steps: a scan of ``_step``, each frame's stats written
        packed (one vector, not one array per layer and field)."""

        # the parameters' own arithmetic once, before the frame loop (see frame_independent): inside the steps'
        # mode loops XLA would not move it out and it ran at every delta step
        known = self._known(args_of(frames[0]))

        def body(state, xs):
            out, state, stats = self._step(state, args_of(xs[0]), xs[1], with_stats, known)
            return state, (out, layer_stats_pack(stats) if with_stats else None)

        state, (outs, packed) = lax.scan(body, state, (frames, keyframes))
        if not with_stats:
            return outs, state, None
        like = _frame_stats(self._static_stats(args_of(frames[0])), 0.0, False)
        return outs, state, layer_stats_unpack(packed, like)

    def _fresh_plain_state(self, args: tuple, frame) -> StreamState:
        """A never-delta stream before its first frame ``frame`` (``args``' frame; ``run_frames``): the input's
        reference is that frame (so it compares unchanged: it runs densely as a forced keyframe), the output
        zeros of the model's output shape, never read. The names in ``config.layers`` are checked against the
        model's, as ``init`` does."""
        self._static_stats(args)
        output = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(self.fn, *args))
        _, reference = ops.sparsify_init(frame)
        return StreamState({INPUT: reference}, output, jnp.bool_(False), jnp.int32(0), jnp.bool_(False), *_spec(frame))

    def _skip_or_dense_frames(
        self, state: StreamState, args_of: Callable, frames, keyframes, with_stats: bool, fresh: bool
    ):
        """``step_frames`` where no frame runs as a delta step (``never_delta``): every frame's mode from one scan
        over the input alone (its reference updated frame by frame, no model run), then the plain model where
        the modes ask for it (``_frames.skipped_or_plain``). ``fresh``: ``state`` is ``_fresh_plain_state``'s, and
        the first frame starts the stream (dense, the flags after it those ``init`` leaves)."""
        starts = jnp.arange(len(frames)) == 0 if fresh else jnp.zeros(len(frames), jnp.bool_)

        def check(carry, xs):
            reference, restart, after = carry
            frame, forced, start = xs
            _, active, reference, nonfinite = _compare_input(self.config, reference, frame, after, lean=True)
            mode = _frames.skip_or_dense(active, nonfinite, restart, forced | start, after)
            restart = jnp.where(start, nonfinite > 0, _frames.restarts(mode, restart))
            return (reference, restart, nonfinite > 0), (mode, nonfinite)

        before = (state.layers[INPUT], state.restart, state.nonfinite)
        # unrolled: one loop trip (on a GPU, one launch of the body's kernels) per CHECK_UNROLL frames
        xs = (frames, keyframes, starts)
        (reference, restart, after), (modes, nonfinite) = lax.scan(check, before, xs, unroll=CHECK_UNROLL)
        outs = _frames.skipped_or_plain(lambda frame: self.fn(*args_of(frame)), state.output, frames, modes)
        last = jax.tree_util.tree_map(lambda a: a[-1], outs)
        state = StreamState(
            {**state.layers, INPUT: reference}, last, restart, state.age, after, state.frame_shape, state.frame_dtype
        )
        if not with_stats:
            return outs, state, None
        static = self._static_stats(args_of(frames[0]))
        skipped = _frame_stats(static, 0.0, False)
        dense = layer_stats_pack(_frame_stats(static, 1.0, True))
        packed = jnp.where((modes == _frames.DENSE)[:, None], dense, layer_stats_pack(skipped))
        stats = layer_stats_unpack(packed, skipped)
        stats[INPUT] = stats[INPUT]._replace(nonfinite=nonfinite)
        return outs, state, stats

    def _step(self, state: StreamState, args: tuple, keyframe, with_stats: bool, known: dict | None = None):
        """One frame: ``(output, state, stats)``; without ``with_stats`` the stats are None and no mode computes
        any (their reductions, carried through the mode loops, are not dead code to XLA: EfficientNet-Lite0's delta
        step on an H200 spent 0.14 ms of 1.8 in them), nor does tracing take the abstract pass for the static ones.

        ``known``: the program's frame-independent values (``_known``), computed once by a caller that steps many
        frames (``_scan_steps``); None for one streamed frame, whose delta and keyframe modes compute their own
        inside their loops, where XLA fuses that arithmetic into its consumers and a skipped frame runs none of it
        (computed before the loops, a frame began with about 85 kernels of 1-1.5 us on an H100, skipped frames
        included)."""
        frame = self._check_step(state, args)
        d, active, input_state, nonfinite = _compare_input(
            self.config, state.layers[INPUT], frame, state.nonfinite, lean=self.never_delta
        )
        static = self._static_stats(args) if with_stats else {}

        # A skipped frame (no input pixel changed: nothing downstream changes either) keeps the last output and
        # every layer's state but the input's; each other mode replaces them. The modes' stats travel packed (one
        # vector, not hundreds of scalars that each loop would copy).
        skipped = _frame_stats(static, 0.0, False)

        def pack(stats: dict) -> jax.Array:
            return layer_stats_pack(stats) if with_stats else jnp.zeros((0,), jnp.float32)

        carry = (state.output, {**state.layers, INPUT: input_state}, pack(skipped))

        def dense_output():  # the plain model (XLA's fastest); the layers' state goes stale: restart
            return self.fn(*args), pack(_frame_stats(static, 1.0, True))

        def every_mode():
            crossover = _frames.crossover(self.config.keyframe_above)
            mode = _frames.choose_mode(
                active, nonfinite, state.restart, jnp.asarray(keyframe), crossover, state.nonfinite
            )
            mode = _frames.refreshed(mode, state.age, self.config.refresh_every)

            def delta_step(carry):
                _, layers, _ = carry
                every = self.config.rolling_refresh
                refresh = None if every is None else (state.age % every, every)
                out, run = self._run(args, layers, (d, layers[INPUT]), refresh, known)
                return out, run.states, pack(run.stats)

            def keyframe_step(carry):  # dense, every layer's state rebuilt
                out, layers, stats = self._dense(args, known)
                return out, layers, pack(stats)

            def dense_step(carry):
                out, packed = dense_output()
                return out, carry[1], packed

            def dense_frame(carry):
                carry = _frames.run_if(mode == _frames.KEYFRAME, keyframe_step, carry)
                return _frames.run_if(mode == _frames.DENSE, dense_step, carry)

            # On a GPU each loop's predicate is a round trip to the host, one per trip and one to leave: a delta
            # step reads three (two here, one in the dense frames' loop, which it skips), a skipped frame two.
            stepped = _frames.run_if(mode == _frames.DELTA, delta_step, carry)
            dense = (mode == _frames.KEYFRAME) | (mode == _frames.DENSE)
            return (*_frames.run_if(dense, dense_frame, stepped), mode)

        def skip_or_dense():
            """A crossover of 0: no frame runs as a delta step, so no mode reads the layers' state, and a keyframe
            asked for runs as a dense frame (the state it would rebuild is never read). A frame is skipped or runs
            the plain model, and one conditional decides (one predicate read on a GPU, where the loops of
            ``every_mode`` read six for a dense frame)."""
            mode = _frames.skip_or_dense(active, nonfinite, state.restart, jnp.asarray(keyframe), state.nonfinite)
            out, packed = lax.cond(mode == _frames.DENSE, dense_output, lambda: (carry[0], carry[2]))
            return out, carry[1], packed, mode

        out, layers, packed, mode = _frames.per_platform(self.config.keyframe_above, every_mode, skip_or_dense)
        stats = None
        if with_stats:
            stats = layer_stats_unpack(packed, skipped)
            stats[INPUT] = stats[INPUT]._replace(nonfinite=nonfinite)
        restart, age = _frames.restarts(mode, state.restart), _frames.aged(mode, state.age)
        state = StreamState(layers, out, restart, age, nonfinite > 0, state.frame_shape, state.frame_dtype)
        return out, state, stats

    def _check_step(self, state, args: tuple):
        """The frame of a step's ``args``, once ``state`` is a stream of this model started on such frames."""
        pos, frame = self._frame("deltajax.delta step", args)
        if not isinstance(state, StreamState):
            raise TypeError(
                f"deltajax.delta step: argument 'state' must be the StreamState returned by stepper.init, "
                f"got {type(state).__name__}; start the stream with stepper.init(*args)"
            )
        got, want = _spec(frame), (state.frame_shape, state.frame_dtype)
        if got != want:
            raise ValueError(
                f"deltajax.delta step: argument args[{pos}] (the frame) has shape {got[0]} and dtype {got[1]}, "
                f"expected shape {want[0]} and dtype {want[1]} as the stream was started with; for a new "
                "resolution, a scene cut or another dtype start again with stepper.init(*args)"
            )
        if INPUT not in state.layers:
            raise ValueError(
                "deltajax.delta step: argument 'state' has no 'input' layer; it was not made by stepper.init of "
                "this model; start the stream with stepper.init(*args)"
            )
        return frame

    def unrefreshed(self, *args) -> dict[str, str]:
        """Layer name -> the primitive that keeps ``DeltaConfig.rolling_refresh`` from recomputing that layer's
        state (``dot_general`` behind a bilinear resize), for arguments like ``args``: those
        layers are refreshed only by ``DeltaConfig.refresh_every``'s keyframes. Empty when the rolling refresh
        reaches every layer."""
        self._frame("deltajax.delta unrefreshed", args)
        found = {}

        def probe(*a):
            _, layers, _ = self._dense(a)
            _, run = self._run(a, layers, refresh=(jnp.int32(0), 1))
            found.update(run.unrefreshed)
            return 0

        jax.eval_shape(probe, *args)
        return found

    def __call__(self, state: StreamState, *args, keyframe=False) -> tuple[Any, StreamState]:
        """One frame: ``(output, new state)``; pure, jit-able with the state donated.

        The frame runs as a delta step; or is skipped when no input pixel changed; or runs the plain dense model
        when it holds non-finite values or has more active input tiles than ``config.keyframe_above`` (the
        layers' state is then rebuilt by a keyframe at the next changed frame); or runs as a keyframe (dense,
        rebuilding the state) when ``keyframe`` is True, or in place of a delta step once the state has taken
        ``config.refresh_every`` delta steps. Where the crossover is 0 (CUDA's measured one, or
        ``keyframe_above=0``) no frame runs as a delta step: a changed frame or a keyframe runs the plain model.
        """
        out, state, _ = self._step(state, args, keyframe, with_stats=False)
        return out, state

    def layers(self, *args) -> dict[str, str]:
        """Layer name -> kind ('act', 'conv', 'sparsify', 'feedback', 'fallback:sort', ...) for arguments like
        ``args``.

        The names of 'act' and 'sparsify' layers are what ``DeltaConfig.layers`` takes; 'feedback' nodes (16-bit
        streams, ``DeltaConfig.feedback``) take no setting.
        """
        self._frame("deltajax.delta layers", args)
        kinds = {}

        def probe(*a):
            _, run = self._run(a, None)
            kinds.update(run.kinds)
            return 0

        jax.eval_shape(probe, *args)
        return kinds


def _abstract(args):
    """``args`` as shapes and dtypes (``jax.ShapeDtypeStruct`` leaves)."""
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), args)


def _compare_input(config: DeltaConfig, reference, frame: jax.Array, after_nonfinite, lean: bool):
    """A frame's input against the reference (``ops.SparsifyState``, the frame itself after a non-finite frame:
    ``_frames.input_reference``): ``(delta, activity, new reference, non-finite values)``. ``lean`` where no mode
    reads the delta (``Stepper.never_delta``): the delta is None and the activity 1 where any pixel changed,
    else 0 (``ops.sparsify_changed``, one fused pass); else the activity is ``_frames.tile_activity``'s."""
    reference = _frames.input_reference(reference, frame, after_nonfinite)
    nonfinite = _frames.count_nonfinite(frame)
    if lean:
        changed, reference = ops.sparsify_changed(reference, frame, input_config(config))
        return None, changed.astype(jnp.float32), reference, nonfinite
    d, reference = ops.sparsify(reference, frame, input_config(config))
    return d, _frames.tile_activity(d.mask), reference, nonfinite


def _frame_stats(static: dict, active: float, keyframe: bool) -> dict:
    """Stats of a skipped (``active`` 0) or plain dense (``active`` 1) frame from the layers' static ones
    (``Stepper._static_stats``: name -> (dense multiply-adds, fallback))."""
    return {n: layer_stats(active, m * active, m, fallback, keyframe) for n, (m, fallback) in static.items()}


def delta(fn: Callable, *, frame_argnum: int = -1, config: DeltaConfig = DeltaConfig()) -> Stepper:
    """Turns ``fn`` (a Flax ``model.apply``, any CNN function of params and a frame) into a delta model.

    Args:
      fn: a JAX-traceable function; one argument is the frame ``[N, H, W, C]``.
        A Flax NNX module is taken as it is: the stepper
        (``deltajax.nnx.ModuleStepper``) takes the module's call arguments,
        without parameters, and reads the module's variables at each call.
      frame_argnum: which positional argument is the frame (default: the last).
      config: thresholds (``DeltaConfig``); all 0 makes the model exact.

    Returns:
      A ``Stepper``: ``out, state = stepper.init(*args)`` on the first frame,
      ``out, state = stepper(state, *args)`` on each later frame.

    Example:
      >>> model = flax.linen.Conv(4, (3, 3))
      >>> variables = model.init(jax.random.key(0), frames[0])
      >>> stepper = deltajax.delta(model.apply)
      >>> y, state = stepper.init(variables, frames[0])
      >>> step = jax.jit(stepper, donate_argnums=0)
      >>> y, state = step(state, variables, frames[1])
    """
    if not callable(fn):
        raise TypeError(f"deltajax.delta: argument 'fn' must be callable, got {type(fn).__name__}")
    if not isinstance(frame_argnum, int):
        raise TypeError(f"deltajax.delta: argument 'frame_argnum' must be an int, got {frame_argnum!r}")
    if not isinstance(config, DeltaConfig):
        raise TypeError(f"deltajax.delta: argument 'config' must be a DeltaConfig, got {type(config).__name__}")
    if _is_nnx_module(fn):
        from deltajax.nnx import ModuleStepper

        return ModuleStepper(fn, frame_argnum, config)
    return Stepper(fn, frame_argnum, config)


def _is_nnx_module(fn) -> bool:
    """True for a Flax NNX module (checked without importing Flax: one can exist only once flax.nnx is loaded)."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(fn, nnx.Module)
