"""Shape logic of windows: padding rules and the receptive-field mask rule.

Kept apart from the ops so the CPU and CUDA paths share one definition of
'SAME', 'VALID' and explicit padding with the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Pads = tuple[tuple[int, int], tuple[int, int]]


def pair(op: str, name: str, value) -> tuple[int, int]:
    """Normalises an int or a pair of positive ints to a pair."""
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise ValueError(f"{op}: argument '{name}' must be a positive int or a pair of them, got {value!r}")
    return value


def effective_size(k: int, dilation: int) -> int:
    """Extent of a kernel of ``k`` taps spaced ``dilation`` apart."""
    return (k - 1) * dilation + 1


def window_pads(
    op: str,
    spatial: Sequence[int],
    window: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    padding,
) -> Pads:
    """Explicit (low, high) pads for H and W, XLA/TF style.

    ``padding`` is 'SAME' (output = ceil(input / stride), the extra pad on
    the high side), 'VALID', an int, or per-axis ``(low, high)`` pairs.
    """
    eff = [effective_size(k, d) for k, d in zip(window, dilation, strict=True)]
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0), (0, 0))
        if mode == "SAME":
            pads = []
            for n, k, s in zip(spatial, eff, strides, strict=True):
                out = -(-n // s)
                total = max((out - 1) * s + k - n, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(f"{op}: argument 'padding' must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    try:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        raise ValueError(
            f"{op}: argument 'padding' must be 'SAME', 'VALID', an int or ((lo, hi), (lo, hi)), got {padding!r}"
        ) from None
    if len(pads) != 2:
        raise ValueError(f"{op}: argument 'padding' needs one (low, high) pair per spatial axis (2), got {padding!r}")
    return pads


def transpose_pads(window: Sequence[int], strides: Sequence[int], dilation: Sequence[int], padding) -> Pads:
    """Pads of the dilated-input convolution that a transposed convolution is.

    Matches ``jax.lax.conv_transpose`` (and so ``flax.linen.ConvTranspose``).
    """
    eff = [effective_size(k, d) for k, d in zip(window, dilation, strict=True)]
    if isinstance(padding, str):
        mode = padding.upper()
        pads = []
        for k, s in zip(eff, strides, strict=True):
            if mode == "SAME":  # output = input * stride
                total = k + s - 2
                lo = k - 1 if s > k - 1 else -(-total // 2)
            elif mode == "VALID":  # output = (input - 1) * stride + k
                total = k + s - 2 + max(k - s, 0)
                lo = k - 1
            else:
                raise ValueError(
                    f"conv_transpose: argument 'padding' must be 'SAME', 'VALID' or pairs, got {padding!r}"
                )
            pads.append((lo, total - lo))
        return tuple(pads)
    return window_pads("conv_transpose", (1, 1), window, (1, 1), dilation, padding)


def receptive_field_mask(
    mask: jax.Array,
    window: Sequence[int],
    strides: Sequence[int],
    pads: Pads,
    *,
    base_dilation: Sequence[int] = (1, 1),
    window_dilation: Sequence[int] = (1, 1),
) -> jax.Array:
    """Output mask ``[N, Ho, Wo]``: OR of the input mask ``[N, H, W]`` over each receptive field.

    Out-of-bounds and the holes of a dilated base (transposed convolution)
    count as inactive.
    """
    grown = lax.reduce_window(
        mask.astype(jnp.float32),
        0.0,
        lax.max,
        (1, *window),
        (1, *strides),
        ((0, 0), *pads),
        base_dilation=(1, *base_dilation),
        window_dilation=(1, *window_dilation),
    )
    return grown > 0
