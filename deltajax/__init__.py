"""deltajax: CNN inference on video that recomputes only what changed (DeltaCNN for JAX)."""

from deltajax import ops
from deltajax.ops import Delta, SparsifyConfig, Truncation

__version__ = "0.1.0"

__all__ = ["Delta", "SparsifyConfig", "Truncation", "__version__", "ops"]
