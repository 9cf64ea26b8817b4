"""Per-layer, per-frame statistics of a delta model: active pixels, multiply-adds, dense fallbacks.

A stepper's ``step_with_stats`` returns a dict ``name -> LayerStats`` (a
pytree of scalars); the video loop stacks them over frames (leading ``[T]``).
Multiply-adds are counted for convolutions and matmuls only: on active output
pixels for delta layers, in full for layers run densely.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class LayerStats(NamedTuple):
    """One layer's numbers for one frame (or ``[T]`` stacked over frames).

    Attributes:
      active: fraction of output pixels that carry an update (1 when dense).
      macs: multiply-adds done.
      dense_macs: multiply-adds of the dense layer.
      fallback: True if the layer has no delta rule and ran densely.
      keyframe: True if the whole frame ran densely (a stream's first frame, a
        keyframe, a busy frame above ``DeltaConfig.keyframe_above``, or a frame
        with non-finite input and the one after it).
      nonfinite: non-finite (NaN, Inf) values in the frame (the ``input``
        layer; 0 elsewhere).
    """

    active: jax.Array
    macs: jax.Array
    dense_macs: jax.Array
    fallback: jax.Array
    keyframe: jax.Array
    nonfinite: jax.Array


def layer_stats(active, macs, dense_macs, fallback=False, keyframe=False, nonfinite=0) -> LayerStats:
    """Builds a LayerStats of float32 / bool / int32 scalars."""
    f32 = jnp.float32
    return LayerStats(
        jnp.asarray(active, f32),
        jnp.asarray(macs, f32),
        jnp.asarray(dense_macs, f32),
        jnp.asarray(fallback),
        jnp.asarray(keyframe),
        jnp.asarray(nonfinite, jnp.int32),
    )


def pack(stats) -> jax.Array:
    """Stats of one frame (a pytree of scalars) as one float32 vector ``[L]``.

    A loop then carries or writes one array per frame, not one per layer and field (EfficientNet-Lite0: about
    four hundred, each its own copy or update on a GPU). Exact for float32 and bool fields, and for integers
    below 2**24.
    """
    return jnp.stack([jnp.asarray(leaf, jnp.float32) for leaf in jax.tree_util.tree_leaves(stats)])


def unpack(packed: jax.Array, like):
    """``packed`` ``[..., L]`` (``pack``, stacked on leading axes) back into the pytree of ``like``, with its
    dtypes; each leaf ``[...]``."""
    leaves, treedef = jax.tree_util.tree_flatten(like)
    if packed.shape[-1:] != (len(leaves),):
        raise ValueError(f"stats.unpack: argument 'packed' must end in {len(leaves)} values, got {packed.shape}")
    return treedef.unflatten([packed[..., i].astype(leaf.dtype) for i, leaf in enumerate(leaves)])


def keyframes(stats: Mapping[str, LayerStats]) -> np.ndarray:
    """Which frames ran densely (``[T]`` bool, or a scalar for one frame's stats)."""
    return np.asarray(next(iter(stats.values())).keyframe)


def mac_ratio(stats: Mapping[str, LayerStats]) -> float:
    """Multiply-adds done / dense multiply-adds over all layers (and frames)."""
    done = sum(float(np.sum(s.macs)) for s in stats.values())
    dense = sum(float(np.sum(s.dense_macs)) for s in stats.values())
    return done / dense if dense else 1.0


def fallback_layers(stats: Mapping[str, LayerStats]) -> list[str]:
    """Names of the layers that ran densely for want of a delta rule."""
    return sorted(name for name, s in stats.items() if bool(np.any(s.fallback)))


def summary(stats: Mapping[str, LayerStats]) -> str:
    """A table: per layer the mean active fraction and the multiply-adds done vs dense."""
    lines = [f"{'layer':<48} {'active':>7} {'MACs':>12} {'dense MACs':>12}"]
    for name, s in stats.items():
        flag = "  (fallback: dense)" if bool(np.any(s.fallback)) else ""
        lines.append(
            f"{name:<48} {float(np.mean(s.active)):7.3f} {float(np.sum(s.macs)):12.4g} "
            f"{float(np.sum(s.dense_macs)):12.4g}{flag}"
        )
    lines.append(f"multiply-adds done / dense: {mac_ratio(stats):.3f}")
    return "\n".join(lines)


def compare_outputs(outs, dense) -> tuple[float, np.ndarray]:
    """Top-1 agreement and relative error of delta outputs against dense ones.

    Args:
      outs, dense: ``[T, N, ..., K]`` outputs per frame and stream (e.g. logits).

    Returns:
      The fraction of frames x streams whose arg-max over the last axis agrees,
      and ``||outs - dense|| / ||dense||`` per frame and stream, ``[T, N]``.
    """
    outs, dense = np.asarray(outs, np.float64), np.asarray(dense, np.float64)
    axes = tuple(range(2, outs.ndim))
    err = np.sqrt(np.sum((outs - dense) ** 2, axis=axes)) / np.maximum(np.sqrt(np.sum(dense**2, axis=axes)), 1e-30)
    return float(np.mean(outs.argmax(-1) == dense.argmax(-1))), err


def psnr_db(a, b, peak: float = 1.0) -> float:
    """PSNR of ``a`` against ``b`` (same shape, values up to ``peak``) over all values, in dB; inf if equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(peak**2 / mse))


def task_metric(model: str, outs, dense) -> dict:
    """The task's measure of delta outputs against dense ones ``[T, N, ...]``, as report fields.

    ``"pose"``: ``keypoint_agreement``, ``keypoint_peaks``, ``keypoint_pixel_error_max`` and the max
    ``heatmap_error`` / ``paf_error`` (:func:`deltajax.keypoints.compare`); classifiers: ``top1_agreement``
    and ``logit_rel_error_max`` / ``_mean`` (:func:`compare_outputs`); ``"superres"`` (outputs in [0, 1]):
    ``psnr_vs_dense_db`` and ``max_error_8bit``, the largest error in 8-bit levels.
    """
    if model == "superres":
        diff = np.asarray(outs, np.float64) - np.asarray(dense, np.float64)
        return {"psnr_vs_dense_db": psnr_db(outs, dense), "max_error_8bit": float(np.max(np.abs(diff)) * 255)}
    if model == "pose":
        from deltajax import keypoints

        found = keypoints.compare(np.asarray(dense), np.asarray(outs))
        return {
            "keypoint_agreement": found["agreement"],
            "keypoint_peaks": found["peaks"],
            "keypoint_pixel_error_max": found["pixel_error_max"],
            "heatmap_error": found["heatmap_error"],
            "paf_error": found["paf_error"],
        }
    agreement, err = compare_outputs(outs, dense)
    return {
        "top1_agreement": agreement,
        "logit_rel_error_max": float(err.max()),
        "logit_rel_error_mean": float(err.mean()),
    }
