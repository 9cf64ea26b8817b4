"""Pictures of where a delta model recomputes: update masks over the frames (PNG grid, GIF animation)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

OVERLAY = np.array([255, 40, 40], np.float32)


def overlay(frame: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` with the pixels of ``mask`` ``[H, W]`` tinted red."""
    out = frame.astype(np.float32)
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * OVERLAY
    return out.astype(np.uint8)


def save_grid(path: str | os.PathLike, frames: np.ndarray, masks: np.ndarray, captions: Sequence[str]) -> None:
    """A PNG of frames ``[K, H, W, 3]`` (uint8) side by side with their update masks ``[K, H, W]``.

    Top row: the frame with the model's prediction as caption; bottom row: the
    pixels recomputed on that frame (red), the "prediction / updates" view.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(frames)
    column = 3.2 * max(1.0, frames.shape[2] / frames.shape[1] / (16 / 9))  # inches: wider frames, wider columns
    fig, axes = plt.subplots(2, k, figsize=(column * k, 4.6), squeeze=False)
    for i in range(k):
        axes[0, i].imshow(frames[i])
        axes[0, i].set_title(captions[i], fontsize=8)
        axes[1, i].imshow(overlay(frames[i] // 3, masks[i], alpha=0.9))
        axes[1, i].set_title(f"updates: {100 * masks[i].mean():.1f} % of pixels", fontsize=8)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_animation(
    path: str | os.PathLike, frames: np.ndarray, masks: np.ndarray, captions: Sequence[str], fps: float = 10.0
) -> None:
    """A GIF of frames ``[T, H, W, 3]`` with the updated pixels tinted red and a caption per frame."""
    from PIL import Image, ImageDraw

    images = []
    for frame, mask, caption in zip(frames, masks, captions, strict=True):
        image = Image.fromarray(overlay(frame, mask))
        width = 960 if image.width > 2 * image.height else 480  # frames side by side keep their size each
        if image.width > width:
            image = image.resize((width, round(width * image.height / image.width)))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, image.width, 14), fill=(0, 0, 0))
        draw.text((3, 2), caption, fill=(255, 255, 255))
        images.append(image.convert("P", palette=Image.Palette.ADAPTIVE))
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
