"""Frozen, hashable configuration objects (safe as static jit arguments)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax

TruncationMode = Literal["max", "l2", "rms", "none"]
TRUNCATION_MODES = ("max", "l2", "rms", "none")


def is_traced(threshold) -> bool:
    """True for a threshold that is a traced scalar (inside a jitted function), not a number."""
    return isinstance(threshold, jax.core.Tracer)


def as_threshold(value):
    """A threshold from a number (as float) or a traced scalar (as it is)."""
    return value if is_traced(value) else float(value)


@dataclasses.dataclass(frozen=True)
class SparsifyConfig:
    """How a dense frame becomes a delta.

    Attributes:
      threshold: a pixel is active when ``max_c |x - ref| > threshold``;
        0 means any change. May be a traced scalar inside a jitted function
        (``deltajax.tune`` runs all its trials through one compiled program
        so); the native kernels take numbers, so a traced threshold runs the
        op on the pure-JAX reference.
      dilation: grow the activity map by this many pixels on every side
        (a square window of ``2 * dilation + 1``) to absorb camera noise.
    """

    threshold: float = 0.0
    dilation: int = 0

    def __post_init__(self):
        if not is_traced(self.threshold) and not self.threshold >= 0:
            raise ValueError(f"SparsifyConfig: threshold must be >= 0, got {self.threshold}")
        if not isinstance(self.dilation, int) or self.dilation < 0:
            raise ValueError(f"SparsifyConfig: dilation must be an int >= 0, got {self.dilation!r}")


@dataclasses.dataclass(frozen=True)
class Truncation:
    """Which updates a non-linear layer drops (kept as a residual instead).

    Attributes:
      mode: test on the output update ``y`` of a pixel: ``"max"`` keeps it
        when ``max_c |y| > threshold``, ``"l2"`` when ``||y||_2 > threshold``,
        ``"rms"`` when ``sqrt(mean_c y^2) > threshold``, ``"none"`` keeps
        every active pixel.
      threshold: 0 keeps every non-zero update (exact). May be a traced
        scalar, as for ``SparsifyConfig``.
    """

    mode: TruncationMode = "max"
    threshold: float = 0.0

    def __post_init__(self):
        if self.mode not in TRUNCATION_MODES:
            raise ValueError(f"Truncation: mode must be one of {TRUNCATION_MODES}, got {self.mode!r}")
        if not is_traced(self.threshold) and not self.threshold >= 0:
            raise ValueError(f"Truncation: threshold must be >= 0, got {self.threshold}")
