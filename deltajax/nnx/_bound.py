"""``deltajax.delta(module)`` for a Flax NNX module: split inside, the module's current state read at each call."""

from __future__ import annotations

import functools
import re
from typing import Any

from flax import nnx

from deltajax.transform import DeltaConfig, Stepper, StreamState, delta


@functools.lru_cache(maxsize=64)
def merged_stepper(graphdef: nnx.GraphDef, frame_argnum: int, config: DeltaConfig) -> Stepper:
    """The stepper of ``nnx.merge(graphdef, state)(*args)``, taking ``(state, *args)``; one per module structure,
    so jitted loops over it compile once.

    ``frame_argnum`` counts in the module's own call arguments.
    """
    return delta(
        lambda state, *args: nnx.merge(graphdef, state)(*args),
        frame_argnum=frame_argnum + 1 if frame_argnum >= 0 else frame_argnum,
        config=config,
    )


class ModuleStepper:
    """A Flax NNX module run as a delta model; made by ``deltajax.delta(module)``.

    The calls are those of ``deltajax.Stepper`` without the parameters:
    ``out, state = stepper.init(*args)``, ``out, state = stepper(state, *args)``
    with ``*args`` the module's call arguments (the frame ``[N, H, W, C]`` at
    ``frame_argnum``). Each call reads the module's current variables
    (``nnx.split``), so an update of the module (new weights) is seen on the
    next frame. The video loops (``run_clip``, ``streaming``) pass those
    variables to their jit as arguments; ``nnx.jit`` does the same for a
    function taking the module.

    Example:
      >>> stepper = deltajax.delta(model)  # model: an nnx.Module
      >>> y, state = stepper.init(frames[0])
      >>> y, state = stepper(state, frames[1])
    """

    def __init__(self, module: nnx.Module, frame_argnum: int, config: DeltaConfig):
        self.module, self.frame_argnum, self.config = module, frame_argnum, config

    def __repr__(self) -> str:
        return f"deltajax.delta({type(self.module).__name__}(...), frame_argnum={self.frame_argnum})"

    def unbind(self, args: tuple) -> tuple[Stepper, tuple]:
        """``(stepper, (module state, *args))``: the plain stepper and its arguments for the module's call ``args``."""
        graphdef, state = nnx.split(self.module)
        return merged_stepper(graphdef, self.frame_argnum, self.config), (state, *args)

    def _call(self, method: str, args: tuple, *before, **options):
        """``stepper.<method>(*before, module state, *args, **options)`` of the plain stepper, its errors naming the
        module's own argument positions (the plain stepper's are one further on: the module state comes first)."""
        stepper, args = self.unbind(args)
        try:
            return getattr(stepper, method)(*before, *args, **options)
        except ValueError as err:
            if "args[" not in str(err):
                raise
            raise ValueError(re.sub(r"args\[(\d+)\]", lambda m: f"args[{int(m.group(1)) - 1}]", str(err))) from None

    def init(self, *args) -> tuple[Any, StreamState]:
        """Starts (or restarts) a stream: the module's call on ``args``, densely; ``(output, state)``."""
        return self._call("init", args)

    def init_with_stats(self, *args) -> tuple[Any, StreamState, dict]:
        """Like ``init``, also returning the per-layer stats of the dense frame."""
        return self._call("init_with_stats", args)

    def step_with_stats(self, state: StreamState, *args, keyframe=False) -> tuple[Any, StreamState, dict]:
        """Like ``__call__``, also returning ``{layer name: deltajax.stats.LayerStats}`` of this frame."""
        return self._call("step_with_stats", args, state, keyframe=keyframe)

    def __call__(self, state: StreamState, *args, keyframe=False) -> tuple[Any, StreamState]:
        """One frame: ``(output, new state)`` (see ``deltajax.Stepper.__call__``)."""
        return self._call("__call__", args, state, keyframe=keyframe)

    def step_frames(self, state: StreamState, *args, keyframes=None, with_stats: bool = False):
        """``K`` frames ``[K, N, H, W, C]`` of a stream in one call: ``(outputs [K, ...], state, stats or None)``
        (see ``deltajax.Stepper.step_frames``)."""
        return self._call("step_frames", args, state, keyframes=keyframes, with_stats=with_stats)

    def run_frames(self, *args, keyframes=None, with_stats: bool = False):
        """A stream started on the first of ``K`` frames ``[K, N, H, W, C]`` and stepped through the others:
        ``(outputs [K, ...], state, stats or None)`` (see ``deltajax.Stepper.run_frames``)."""
        return self._call("run_frames", args, keyframes=keyframes, with_stats=with_stats)

    def layers(self, *args) -> dict[str, str]:
        """Layer name -> kind for the module's call arguments ``args`` (see ``deltajax.Stepper.layers``)."""
        return self._call("layers", args)
