"""Flax NNX front end: ``deltajax.delta(module)``, and ``DeltaWrapper`` keeping its state in a ``DeltaState``.

``deltajax.delta`` takes an ``nnx.Module`` directly (``ModuleStepper``); the
video loops (``deltajax.run_clip``, ``deltajax.streaming``) take an NNX
module, a ``DeltaWrapper`` or such a stepper.
"""

from deltajax.nnx._bound import ModuleStepper
from deltajax.nnx.loops import as_stepper
from deltajax.nnx.wrapper import DeltaState, DeltaWrapper

__all__ = ["DeltaState", "DeltaWrapper", "ModuleStepper", "as_stepper"]
