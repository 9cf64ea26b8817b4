"""NNX models in the video loops: as a plain stepper whose first argument is the module's state."""

from __future__ import annotations

from flax import nnx

from deltajax.nnx._bound import ModuleStepper
from deltajax.nnx.wrapper import DeltaWrapper
from deltajax.transform import DeltaConfig, Stepper


def as_stepper(model, args: tuple) -> tuple[Stepper, tuple] | None:
    """``(stepper, arguments)`` for an NNX model in a video loop, or None when ``model`` is not one.

    ``model`` is a ``ModuleStepper`` (``deltajax.delta(module)``), a
    ``DeltaWrapper`` (its config; the loop starts its own stream and leaves the
    wrapper's state alone) or any ``nnx.Module`` (exact: ``DeltaConfig()``);
    ``args`` are the module's call arguments without the frame (after it, for
    a module or a wrapper). The module's state goes in as the stepper's first
    argument, so the loop's jit traces it instead of baking it in as constants.
    """
    if isinstance(model, DeltaWrapper):
        model = ModuleStepper(model.module, 0, model.config)
    elif isinstance(model, nnx.Module):
        model = ModuleStepper(model, 0, DeltaConfig())
    if not isinstance(model, ModuleStepper):
        return None
    return model.unbind(args)
