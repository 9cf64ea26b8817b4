"""Video input: decoding clips into frame arrays (PyAV)."""

from __future__ import annotations

import os
from importlib import resources

import numpy as np


def bundled_clip() -> str:
    """Path of the clip shipped with deltajax (640x480, 109 frames, CC-BY-4.0 Intel)."""
    return str(resources.files("deltajax") / "data" / "asl_gestures_book.mkv")


def read_clip(
    path: str | os.PathLike | None = None,
    *,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decodes a video file into RGB frames.

    Args:
      path: a video file PyAV can open; None for the bundled clip.
      max_frames: stop after this many frames.
      size: ``(height, width)`` to resize to (bilinear, by FFmpeg), or None.

    Returns:
      ``[T, H, W, 3]`` uint8, every decoded frame in presentation order
      (no frame-rate resampling, so no duplicated frames).
    """
    import av  # imported lazily: decoding is optional for the library itself

    path = bundled_clip() if path is None else os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"read_clip: argument 'path' names no file: {path!r}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"read_clip: argument 'size' must be (height, width) of positive ints, got {size!r}")
    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if size is not None:
                frame = frame.reformat(width=size[1], height=size[0])
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"read_clip: no video frames could be decoded from {path!r}")
    return np.stack(frames)
