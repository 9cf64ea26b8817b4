"""Decoding clips: shapes, start / max_frames / size, clear errors, and the OpenCV fallback."""

from __future__ import annotations

import numpy as np
import pytest

from deltajax import video


def test_bundled_clip_decodes_with_start_count_and_size():
    all_frames = video.read_clip(max_frames=6)
    assert all_frames.shape == (6, 480, 640, 3) and all_frames.dtype == np.uint8
    later = video.read_clip(start=2, max_frames=3)
    np.testing.assert_array_equal(later, all_frames[2:5])
    assert video.read_clip(max_frames=2, size=(48, 64)).shape == (2, 48, 64, 3)


def test_bad_arguments_are_clear():
    with pytest.raises(FileNotFoundError, match="read_clip: argument 'path' names no file"):
        video.read_clip("/no/such/clip.mp4")
    with pytest.raises(ValueError, match=r"read_clip: argument 'size' must be \(height, width\)"):
        video.read_clip(size=(0, 10))


def test_opencv_fallback_decodes_the_same_frames():
    pytest.importorskip("cv2")
    pytest.importorskip("av")
    path = video.bundled_clip()
    by_av = np.stack(video._decode_pyav(path, 1, 3, None))
    by_cv = np.stack(video._decode_opencv(path, 1, 3, None))
    assert by_cv.shape == by_av.shape
    assert np.mean(np.abs(by_cv.astype(int) - by_av.astype(int))) < 3  # colour conversion may differ slightly


def test_bundled_clips_by_name():
    assert video.bundled_clip("people").endswith("one-by-one-person-detection.mp4")
    with pytest.raises(ValueError, match="bundled_clip: argument 'name' must be one of"):
        video.bundled_clip("cats")
