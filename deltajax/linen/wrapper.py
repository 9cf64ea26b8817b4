"""``DeltaWrapper``: any Linen module, unmodified, as a delta module through ``deltajax.delta``."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from deltajax.linen._stream import COLLECTION, START, start_or_step
from deltajax.transform import DeltaConfig, StreamState, delta


class DeltaWrapper(nn.Module):
    """Runs ``module`` as a delta program; its state lives in 'delta_state', its variables under ``module``.

    Attributes:
      module: any Linen module whose first call argument is the frame ``[N, H, W, C]``.
      config: the thresholds (``deltajax.DeltaConfig``).

    Example:
      >>> model = DeltaWrapper(MyCNN())
      >>> variables = model.init(key, frames[0])
      >>> y, variables = deltajax.linen.start(model, variables, frames[0])
      >>> y, upd = model.apply(variables, frames[1], mutable=['delta_state'])
    """

    module: nn.Module
    config: DeltaConfig = DeltaConfig()

    @nn.compact
    def __call__(self, frame, *args):
        if self.is_initializing():
            return self.module(frame, *args)
        inner = {k: v for k, v in self.module.variables.items() if k not in (COLLECTION, START)}
        unbound = self.module.clone(parent=None)
        stepper = delta(lambda v, f, *a: unbound.apply(v, f, *a), frame_argnum=1, config=self.config)

        def saved(state: StreamState, spec):
            return {
                "layers": state.layers,
                "output": state.output,
                "restart": state.restart,
                "age": state.age,
                "nonfinite": state.nonfinite,
                "frame": spec,
            }

        def init():
            out, state = stepper.init(inner, frame, *args)
            return out, saved(state, jnp.zeros((0, *np.shape(frame)), frame.dtype))

        def step(held):
            spec = held["frame"]
            state = StreamState(
                held["layers"],
                held["output"],
                held["restart"],
                held["age"],
                held["nonfinite"],
                tuple(spec.shape[1:]),
                np.dtype(spec.dtype).name,
            )
            out, state = stepper(state, inner, frame, *args)
            return out, saved(state, spec)

        return start_or_step(self, init, step)
