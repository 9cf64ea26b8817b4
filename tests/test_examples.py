"""Every script in examples/ runs as shipped (in a scratch folder) and prints what it promises."""

from __future__ import annotations

import pathlib
import re
import runpy

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
NUMBER = r"([0-9.eE+-]+)"
# script -> (a pattern it must print, with one number, and the check that number must pass)
PROMISES = {
    "convert_flax_model.py": (r"max \|delta - dense\| = " + NUMBER, lambda v: v < 1e-4),  # exact: threshold 0
    "scan_video_loop.py": (r"multiply-adds done / dense: " + NUMBER, lambda v: 0 < v < 1),
    "multi_stream.py": (r"top-1 of each stream at the last frame: \[(\d+)", lambda v: 0 <= v < 1000),
    "tune_thresholds.py": (r"multiply-adds done / dense: " + NUMBER, lambda v: 0 < v <= 1),
    "demo.py": (r"speedup: " + NUMBER + "x", lambda v: v > 0),
}


def test_every_example_is_listed():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(PROMISES)


@pytest.mark.parametrize("script", sorted(PROMISES))
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # they write their outputs (thresholds.json, deltajax_demo/) where they run
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    out = capsys.readouterr().out
    pattern, check = PROMISES[script]
    values = [float(v) for v in re.findall(pattern, out)]
    assert values, f"{script} did not print {pattern!r}:\n{out[-2000:]}"
    assert all(check(v) for v in values), f"{script}: {values}"
