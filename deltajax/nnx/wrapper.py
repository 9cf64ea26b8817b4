"""``DeltaWrapper``: any NNX module, unmodified, as a delta module whose stream state is an NNX variable."""

from __future__ import annotations

import numpy as np
from flax import nnx

from deltajax.nnx._bound import ModuleStepper
from deltajax.transform import DeltaConfig, StreamState


class DeltaState(nnx.Variable):
    """The stream state of a ``DeltaWrapper``: a ``deltajax.StreamState`` (per-layer state, the last output, the
    restart flag, the delta steps since the state was built, whether the last frame was non-finite, the frame shape
    and dtype), or None before the stream's first frame.

    ``nnx.state(model, DeltaState)`` selects it; ``nnx.state(model, nnx.Param)`` leaves it out.
    """


class DeltaWrapper(nnx.Module):
    """Runs ``module`` as a delta model, keeping the stream state in a ``DeltaState`` variable.

    The first call (and the first after ``reset()``) runs the frame densely and
    starts the stream; later calls run delta steps and update the state in
    place, the NNX way: eagerly, or under ``nnx.jit`` (which writes the new
    state back into the module).

    Args:
      module: any NNX module whose first call argument is the frame ``[N, H, W, C]``
        (in inference mode, e.g. ``BatchNorm(use_running_average=True)``).
      config: the thresholds (``deltajax.DeltaConfig``); all 0 makes it exact.

    Example:
      >>> model = deltajax.nnx.DeltaWrapper(MyCNN(rngs=nnx.Rngs(0)))
      >>> step = nnx.jit(lambda model, frame: model(frame))
      >>> for frame in frames:  # the first frame runs densely
      ...     y = step(model, frame)
    """

    def __init__(self, module: nnx.Module, config: DeltaConfig = DeltaConfig()):
        if not isinstance(module, nnx.Module):
            raise TypeError(
                f"deltajax.nnx.DeltaWrapper: argument 'module' must be a flax.nnx.Module, got {type(module).__name__}"
            )
        if not isinstance(config, DeltaConfig):
            raise TypeError(
                f"deltajax.nnx.DeltaWrapper: argument 'config' must be a deltajax.DeltaConfig, "
                f"got {type(config).__name__}"
            )
        self.module = module
        self.config = config
        self.stream = DeltaState(None)

    def __call__(self, frame, *args, keyframe=False):
        """One frame ``[N, H, W, C]`` (then the module's other arguments): the output; the state is updated.

        ``keyframe`` (a bool, traced or not) runs the frame densely, restarting the state.
        """
        stepper = ModuleStepper(self.module, 0, self.config)
        held = self.stream.get_value()
        if held is None:
            out, state = stepper.init(frame, *args)
        else:
            _check_frame(held, frame)
            out, state = stepper(held, frame, *args, keyframe=keyframe)
        self.stream.set_value(state)
        return out

    def reset(self) -> None:
        """Ends the stream: the next call starts a new one (a scene cut, a new resolution or dtype)."""
        self.stream.set_value(None)


def _check_frame(held: StreamState, frame) -> None:
    got = (tuple(np.shape(frame)), np.dtype(getattr(frame, "dtype", None)).name)
    if got != (held.frame_shape, held.frame_dtype):
        raise ValueError(
            f"deltajax.nnx.DeltaWrapper: argument 'frame' has shape {got[0]} and dtype {got[1]}, expected shape "
            f"{held.frame_shape} and dtype {held.frame_dtype} as the stream was started with; for a new "
            "resolution or dtype call model.reset() first"
        )
