"""``deltajax.delta``: trace any JAX CNN to a jaxpr and run it as a delta program.

Modules: ``_jaxpr`` (flatten calls), ``_analysis`` (frame dependence,
element-wise groups), ``_rules`` (one rule per primitive, on deltajax.ops),
``_interpret`` (the pass, kinds and state), ``stepper`` (the public object),
``config`` (thresholds).
"""

from deltajax.transform.config import DeltaConfig
from deltajax.transform.stepper import Stepper, StreamState, delta

__all__ = ["DeltaConfig", "Stepper", "StreamState", "delta"]
