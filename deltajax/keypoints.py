"""Keypoints from pose heatmaps, limbs from part-affinity fields, and the metric comparing two pose outputs.

Works on OpenPose-style maps ``[..., H, W, K + 1 + 2L]`` (numpy, float): K keypoint heatmaps, a background
heatmap, then L part-affinity fields of two channels (x, y) each (:mod:`deltajax.models.pose`: K = 18, L = 19).

A peak is a heatmap cell above ``threshold`` that is the maximum of its 3x3 neighbourhood; its location is
refined to sub-cell precision by the heatmap-weighted centroid of that neighbourhood.

Example:
    >>> report = compare(dense_maps, delta_maps)  # doctest: +SKIP
    >>> report["agreement"], report["pixel_error_max"], report["heatmap_error"]  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

__all__ = ["compare", "limbs", "peaks"]


def _check(name: str, maps: np.ndarray, keypoints: int) -> np.ndarray:
    maps = np.asarray(maps, np.float32)
    if maps.ndim < 3 or maps.shape[-1] <= keypoints:
        raise ValueError(
            f"{name}: argument 'maps' must be [..., H, W, C] with C > {keypoints} keypoint channels, "
            f"got shape {maps.shape}"
        )
    return maps


def _local_maxima(x: np.ndarray) -> np.ndarray:
    """Cells of ``[H, W, K]`` not smaller than any of their 8 neighbours; of equal neighbours (a plateau) only
    the first in raster order counts."""
    h, w = x.shape[:2]
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    keep = np.ones(x.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                neighbour = padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                keep &= x > neighbour if (dy, dx) < (0, 0) else x >= neighbour
    return keep


def peaks(maps: np.ndarray, keypoints: int = 18, threshold: float = 0.1) -> list[np.ndarray]:
    """Peaks of one frame's heatmaps.

    Args:
        maps: ``[H, W, C]``, the first ``keypoints`` channels heatmaps.
        keypoints: how many channels are keypoint heatmaps.
        threshold: a peak's value must exceed it.

    Returns:
        per keypoint, ``[P, 3]``: (y, x) in output cells (sub-cell refined) and the peak value.
    """
    maps = _check("peaks", maps, keypoints)
    if maps.ndim != 3:
        raise ValueError(f"peaks: argument 'maps' must be one frame [H, W, C], got shape {maps.shape}")
    heat = maps[..., :keypoints]
    is_peak = (heat > threshold) & _local_maxima(heat)
    padded = np.pad(heat, ((1, 1), (1, 1), (0, 0)))
    offsets = np.arange(-1, 2, dtype=np.float32)
    out = []
    for k in range(keypoints):
        ys, xs = np.nonzero(is_peak[..., k])
        windows = [padded[y : y + 3, x : x + 3, k] for y, x in zip(ys, xs, strict=True)]
        window = np.stack(windows) if windows else np.zeros((0, 3, 3), np.float32)
        weight = np.maximum(window, 0).sum(axis=(1, 2))
        dy = (np.maximum(window, 0).sum(axis=2) @ offsets) / weight
        dx = (np.maximum(window, 0).sum(axis=1) @ offsets) / weight
        out.append(np.stack([ys + dy, xs + dx, heat[ys, xs, k]], axis=1).astype(np.float32))
    return out


def limbs(
    maps: np.ndarray, pairs, keypoints: int = 18, threshold: float = 0.1, min_score: float = 0.05, samples: int = 10
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Limbs of one frame: keypoint pairs joined by their part-affinity field.

    For limb ``i`` joining keypoints ``a`` and ``b`` along field ``f`` (``pairs[i] = (a, b, f)``: channels
    ``keypoints + 1 + 2f`` (x) and ``keypoints + 2 + 2f`` (y)), every pair of peaks is scored by the mean
    projection of the field onto the unit vector from a to b at ``samples`` points along the segment; pairs
    scoring above ``min_score`` are taken best first, each peak at most once per limb.

    Returns:
        ``(limb index, (y, x) of a, (y, x) of b)`` in output cells.
    """
    maps = _check("limbs", maps, keypoints)
    found = peaks(maps, keypoints, threshold)
    h, w = maps.shape[:2]
    t = np.linspace(0.0, 1.0, samples, dtype=np.float32)[:, None]
    out = []
    for i, (a, b, f) in enumerate(pairs):
        field = maps[..., keypoints + 1 + 2 * f : keypoints + 3 + 2 * f]
        scored = []
        for pa, qa in enumerate(found[a][:, :2]):
            for pb, qb in enumerate(found[b][:, :2]):
                vec = qb - qa
                norm = float(np.hypot(*vec))
                if norm < 1e-6:
                    continue
                pts = np.rint(qa + t * vec).astype(int)
                pts = np.clip(pts, 0, [h - 1, w - 1])
                along = field[pts[:, 0], pts[:, 1]] @ np.array([vec[1], vec[0]]) / norm  # field is (x, y)
                scored.append((float(along.mean()), pa, pb))
        used_a, used_b = set(), set()
        for score, pa, pb in sorted(scored, reverse=True):
            if score > min_score and pa not in used_a and pb not in used_b:
                used_a.add(pa)
                used_b.add(pb)
                out.append((i, found[a][pa, :2], found[b][pb, :2]))
    return out


def _match(ref: np.ndarray, test: np.ndarray, radius: float) -> list[tuple[int, int]]:
    """Closest-first one-to-one matching of peaks ``[P, 3]`` within ``radius`` cells (Chebyshev)."""
    if not len(ref) or not len(test):
        return []
    dist = np.abs(ref[:, None, :2] - test[None, :, :2]).max(axis=-1)
    pairs, used_r, used_t = [], set(), set()
    for r, t in zip(*np.unravel_index(np.argsort(dist, axis=None), dist.shape), strict=True):
        if dist[r, t] <= radius and r not in used_r and t not in used_t:
            used_r.add(r)
            used_t.add(t)
            pairs.append((int(r), int(t)))
    return pairs


def compare(
    reference: np.ndarray,
    maps: np.ndarray,
    keypoints: int = 18,
    threshold: float = 0.1,
    radius: float = 1.0,
    stride: float = 8.0,
) -> dict:
    """How well ``maps`` reproduces ``reference``'s keypoints (e.g. delta against dense), over all frames.

    Args:
        reference, maps: ``[..., H, W, C]`` of equal shape (leading dims: frames, streams).
        keypoints: heatmap channels; the next one is background, the rest part-affinity fields.
        threshold: peak threshold of :func:`peaks`.
        radius: peaks match when within this many output cells of each other (both axes).
        stride: input pixels per output cell (the pixel error's unit).

    Returns:
        ``agreement``: matched peaks * 2 / (reference peaks + peaks), 1 with no peaks at all;
        ``per_keypoint``: the same per keypoint (a list); ``peaks``: reference peak count;
        ``pixel_error_mean`` / ``pixel_error_max``: distance of matched peaks in input pixels;
        ``heatmap_error`` / ``paf_error``: max absolute difference of the heatmaps (with background) and of
        the part-affinity fields.
    """
    reference = _check("compare", reference, keypoints)
    maps = _check("compare", maps, keypoints)
    if reference.shape != maps.shape:
        raise ValueError(f"compare: 'maps' has shape {maps.shape}, expected the reference's {reference.shape}")
    frames_ref = reference.reshape(-1, *reference.shape[-3:])
    frames = maps.reshape(-1, *maps.shape[-3:])
    matched, counts, errors, ref_peaks = np.zeros(keypoints), np.zeros(keypoints), [], 0
    for ref_frame, frame in zip(frames_ref, frames, strict=True):
        found = zip(peaks(ref_frame, keypoints, threshold), peaks(frame, keypoints, threshold), strict=True)
        for k, (r, t) in enumerate(found):
            pairs = _match(r, t, radius)
            matched[k] += 2 * len(pairs)
            counts[k] += len(r) + len(t)
            ref_peaks += len(r)
            errors += [float(np.hypot(*(r[i, :2] - t[j, :2]))) * stride for i, j in pairs]
    per_keypoint = np.where(counts > 0, matched / np.maximum(counts, 1), 1.0)
    diff = np.abs(reference - maps)
    return {
        "agreement": float(matched.sum() / counts.sum()) if counts.sum() else 1.0,
        "per_keypoint": per_keypoint.tolist(),
        "peaks": ref_peaks,
        "pixel_error_mean": float(np.mean(errors)) if errors else 0.0,
        "pixel_error_max": float(np.max(errors)) if errors else 0.0,
        "heatmap_error": float(diff[..., : keypoints + 1].max()),
        "paf_error": float(diff[..., keypoints + 1 :].max()) if diff.shape[-1] > keypoints + 1 else 0.0,
    }
