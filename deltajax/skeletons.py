"""Pose skeletons drawn on video frames: the limbs that :func:`deltajax.keypoints.limbs` finds, and the peaks.

Example:
    >>> from deltajax.models import pose
    >>> picture = draw(frame, maps, pose.LIMBS)  # doctest: +SKIP  uint8 RGB [H, W, 3]
"""

from __future__ import annotations

import colorsys

import numpy as np

from deltajax import keypoints

__all__ = ["draw"]


def _colour(i: int, n: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(i / max(n, 1), 0.9, 1.0)
    return round(255 * r), round(255 * g), round(255 * b)


def draw(frame: np.ndarray, maps: np.ndarray, limbs, keypoints_: int = 18, threshold: float = 0.1) -> np.ndarray:
    """``frame`` (uint8 RGB ``[H, W, 3]``) with the skeleton found in ``maps`` (``[h, w, C]``, one frame).

    Output cells are mapped to frame pixels by the ratio of the sizes (cell centres); each limb has its own
    colour, each keypoint peak a white dot.
    """
    from PIL import Image, ImageDraw

    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"draw: argument 'frame' must be uint8 RGB [H, W, 3], got {frame.dtype} {frame.shape}")
    maps = np.asarray(maps, np.float32)
    scale = np.array([frame.shape[0] / maps.shape[0], frame.shape[1] / maps.shape[1]])

    def pixel(cell):  # (y, x) cell -> (x, y) pixel at the cell's centre
        y, x = (np.asarray(cell) + 0.5) * scale
        return float(x), float(y)

    image = Image.fromarray(frame)
    pen = ImageDraw.Draw(image)
    width = max(2, round(frame.shape[1] / 200))
    for i, a, b in keypoints.limbs(maps, limbs, keypoints_, threshold):
        pen.line([pixel(a), pixel(b)], fill=_colour(i, len(limbs)), width=width)
    for found in keypoints.peaks(maps, keypoints_, threshold):
        for y, x, _ in found:
            px, py = pixel((y, x))
            pen.ellipse((px - width, py - width, px + width, py + width), fill=(255, 255, 255))
    return np.asarray(image)
