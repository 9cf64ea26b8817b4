"""deltajax: CNN inference on video that recomputes only what changed (DeltaCNN for JAX).

``deltajax.delta(fn)`` runs any JAX CNN (a Flax ``model.apply``, an NNX module)
as a delta model; ``deltajax.linen`` has Flax layers and a wrapper,
``deltajax.nnx`` an NNX wrapper; ``run_clip`` and
``streaming`` are the frame loops; ``deltajax.stats`` reports the savings;
``deltajax.crossover`` measures where a model's delta step stops paying.
"""

from deltajax import crossover, ops, sharding, stats
from deltajax.ops import Delta, SparsifyConfig, Truncation
from deltajax.transform import DeltaConfig, Stepper, StreamState, delta
from deltajax.video import StreamFns, run_clip, streaming

__version__ = "0.1.0"

__all__ = [
    "Delta",
    "DeltaConfig",
    "SparsifyConfig",
    "Stepper",
    "StreamFns",
    "StreamState",
    "Truncation",
    "__version__",
    "crossover",
    "delta",
    "linen",
    "nnx",
    "ops",
    "run_clip",
    "sharding",
    "stats",
    "streaming",
]


def __getattr__(name: str):
    # deltajax.linen and deltajax.nnx import flax; load them only when asked for.
    if name in ("linen", "nnx"):
        import importlib

        return importlib.import_module(f"deltajax.{name}")
    raise AttributeError(f"module 'deltajax' has no attribute {name!r}")
