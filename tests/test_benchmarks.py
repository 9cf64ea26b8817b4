"""The benchmarks run (tiny presets) and write the rows their tables and the README are made of."""

from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import pytest

from benchmarks import kernels
from deltajax import timing


def test_kernel_benchmark_writes_rows(tmp_path):
    out = tmp_path / "kernels.json"
    layers = "conv1x1,relu6,dw3x3_relu6"
    assert kernels.main(["--preset", "cpu", "--quick", "--layers", layers, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {r["layer"] for r in rows} == set(layers.split(","))
    assert data["meta"]["trace_calls"] is None  # no --trace: no kernel fields
    for r in rows:
        assert r["dense_ms"] > 0 and r["delta_ms"] > 0 and r["speedup"] > 0
        assert "kernels_per_call" not in r
    fused = [r for r in rows if r["layer"] == "dw3x3_relu6"]
    assert [r["p"] for r in fused] == [0.0, 0.05, 1.0] and fused[-1]["p_out"] == 1.0 and fused[-1]["tflops_active"] > 0
    act = [r for r in rows if r["layer"] == "relu6" and r["p"] == 1.0]
    assert act and act[0]["gbps_active"] > 0


def test_kernel_benchmark_takes_scattered_masks(tmp_path, monkeypatch):
    """--masks scatter: single pixels at random, whose 3x3 receptive fields cover far more outputs than blobs do.
    The JSON records the XLA flags that both sides ran under."""
    jax.devices()  # XLA has read its flags: the one set below is only recorded, never applied
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nonexistent")
    out = tmp_path / "kernels.json"
    argv = ["--preset", "cpu", "--quick", "--layers", "conv3x3", "--masks", "scatter", "--fractions", "0,0.05,1"]
    assert kernels.main([*argv, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["masks"] == "scatter" and data["meta"]["xla_flags"] == "--xla_dump_to=/nonexistent"
    by_p = {r["p"]: r for r in data["rows"]}
    assert by_p[0.0]["p_out"] == 0.0 and by_p[1.0]["p_out"] == 1.0
    # 5 % of the pixels alone: 1 - 0.95**9 = 37 % of a 3x3's outputs (blobs of the same area: about 5 %)
    assert 0.3 < by_p[0.05]["p_out"] < 0.45


@pytest.mark.parametrize("bad", ["0.5,x", "1.5", "-0.1,0.2", ""])
def test_kernel_benchmark_rejects_bad_fractions(bad, capsys):
    with pytest.raises(SystemExit):
        kernels.main(["--preset", "cpu", "--quick", f"--fractions={bad}"])
    assert "--fractions: expected comma-separated numbers in [0, 1]" in capsys.readouterr().err


def test_mask_shapes_cover_the_fraction():
    for name, make in timing.MASKS.items():
        mask = make(2, 64, 96, 0.2, seed=3)
        assert mask.shape == (2, 64, 96) and mask.dtype == bool, name
        assert 0.15 < mask.mean() < 0.3, name
        assert not make(1, 8, 8, 0.0).any() and make(1, 8, 8, 1.0).all(), name


@pytest.mark.parametrize("unroll", [False, True])
def test_stepped_program_carries_the_state_through_every_step(unroll):
    def step(state, x):  # the output: the state before the step, plus x
        return state + x, state * 2 + x

    many = timing.stepped_program(step, 5, unroll)
    state, outs = many(jnp.ones((3,), jnp.float32), jnp.float32(1))
    # states 1, 3, 7, 15, 31, 63; each output's first element is the state before its step plus 1
    assert state.tolist() == [63.0] * 3 and outs.tolist() == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert ("while" in many.lower(jnp.ones((3,), jnp.float32), jnp.float32(1)).as_text()) is not unroll
    # one program however unroll is passed (benchmarks.crossover traces the one deltajax.crossover timed)
    assert many is timing.stepped_program(step, 5, unroll=unroll)
    assert timing.stepped_program(step, 5) is timing.stepped_program(step, 5, False)


def test_activation_case_times_the_reference_too():
    rows = kernels.run_activation_case("relu6", (1, 16, 24), 8, "bf16", (0.0, 0.3), baseline=True)
    assert [r["p"] for r in rows] == [0.0, 0.3]
    assert "sparse_jax_ms" not in rows[0] and rows[1]["sparse_jax_ms"] > 0


def test_profile_step_times_and_lists_kernels(tmp_path):
    from benchmarks import profile_step

    out = tmp_path / "step.json"
    argv = ["--streams", "1", "--size", "32x48", "--frames", "3", "--precision", "f32_highest"]
    traces = ["--trace", str(tmp_path / "trace"), "--clip-trace", str(tmp_path / "clip")]
    assert profile_step.main([*argv, *traces, "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["dense_frame_ms"] > 0 and row["still_step_ms"] > 0 and row["moving_step_ms"] > 0
    assert 0 < row["still_call_ms"] < 2 * row["still_step_ms"]
    for name in ("dense", "delta"):  # the end-to-end benchmark's programs over the 3-frame clip, per frame
        clip = row["clip_traces"][name]
        assert clip["call_ms_per_frame"] > 0 and clip["kernels"] > 0 and clip["top"]
        assert 0 < clip["busy_ms"] <= clip["span_ms"] + 1e-9 and clip["gap_ms"] >= -1e-9
    for kind in ("still", "moving"):
        trace = row["traces"][kind]
        assert trace["kernels"] > 0 and trace["kernel_ms"] > 0
        # deltajax's custom calls: by op name (CPU), by kernel name where XLA runs them in a command buffer (GPU)
        assert any("ffi_call" in t["kernel | hlo_op"] or "deltajax::" in t["kernel | hlo_op"] for t in trace["top"])
        if jax.default_backend() == "cpu":  # thunks named by their custom call: target and output shape
            assert any(re.search(r"\| deltajax_\w+ \w+\[", t["kernel | hlo_op"]) for t in trace["top"])


def test_span_and_busy_time_of_overlapping_kernels():
    from benchmarks.profile_step import _span_and_busy_ms

    ms = 1_000_000  # ns
    # [0, 2] and [1, 3] overlap, [2.5, 2.8] lies inside, [5, 6] after a 2-ms gap: span 6 ms, busy 4 ms
    intervals = [(5 * ms, 6 * ms), (0, 2 * ms), (1 * ms, 3 * ms), (int(2.5 * ms), int(2.8 * ms))]
    assert _span_and_busy_ms(intervals) == pytest.approx((6.0, 4.0))
    assert _span_and_busy_ms([]) == (0.0, 0.0)


def test_step_timeline_gives_the_middle_step_in_order_with_gaps():
    from benchmarks.profile_step import step_timeline

    us = 1_000  # ns
    # three steps of two kernels: a (2 us), then b (1 us) after a 3-us gap; each step 10 us after the last
    one_step = ((0, 2 * us, "a"), (5 * us, us, "b"))
    events = [(10 * us * k + start, d, name) for k in range(3) for start, d, name in one_step]
    steps = step_timeline(events, 3)
    assert [(k["kernel | hlo_op"], k["us"], k["gap_us"]) for k in steps] == [("a", 2.0, 0.0), ("b", 1.0, 3.0)]
    assert step_timeline([(0, us, "a"), (500, us, "b")], 1)[1]["gap_us"] == pytest.approx(-0.5)  # overlapped
    for bad in (0, 7):
        with pytest.raises(ValueError, match=r"step_timeline: argument 'steps' must be between 1 and the number"):
            step_timeline(events, bad)


def test_host_turns_split_the_long_gaps_by_whether_a_read_back_came_before():
    from benchmarks.profile_step import host_turns

    def k(name, gap):
        return {"kernel | hlo_op": name, "us": 1.0, "gap_us": gap}

    kernels = [
        k("MemcpyD2H | while.5", 0.0),
        k("fusion | a", 20.0),  # the host's decision after the predicate's read-back
        k("fusion | b", 4.9),  # short: not counted
        k("fusion | c", 130.0),  # a long gap after a kernel
        k("MemcpyD2H | while.7", 6.0),  # long, after a kernel: other
        k("fusion | d", 10.0),  # after the second read-back
    ]
    assert host_turns(kernels) == {
        "after_readback": {"count": 2, "us": 30.0},
        "other": {"count": 2, "us": 136.0},
    }
    assert host_turns(kernels, at_least_us=100.0)["other"] == {"count": 1, "us": 130.0}
    assert (
        host_turns([])
        == host_turns(kernels[:1])
        == {
            "after_readback": {"count": 0, "us": 0.0},
            "other": {"count": 0, "us": 0.0},
        }
    )


def test_alternating_rounds_fill_about_a_second_within_bounds():
    from deltajax.benchmark import _rounds

    assert _rounds(0.2) == 5  # a GPU's short calls: as many rounds as fit in the budget
    assert _rounds(0.001) == 25 and _rounds(9.0) == 3  # never more than 25, never fewer than 3


def test_end_to_end_benchmark_writes_rows(tmp_path):
    from deltajax import benchmark
    from deltajax.video import bundled_clip

    out = tmp_path / "e2e.json"
    argv = ["--preset", "smoke", "--video", bundled_clip("asl"), "--frames", "3", "--out", str(out)]
    argv += ["--keyframe-above", "none", "--dense-from-stride", "8"]  # every changed frame a delta step, a dense tail
    assert benchmark.main([*argv, "--rolling-refresh", "4"]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["model"] == "efficientnet_lite0" and row["frames"] == 3
    assert row["keyframe_above"] is None and row["dense_from_stride"] == 8
    assert row["rolling_refresh"] == 4 and row["rolling_fps"] > 0
    assert row["dense_fps"] > 0 and row["delta_fps"] > 0 and 0 < row["mac_ratio"] <= 1
    assert 0 <= row["top1_agreement"] <= 1 and 0 < row["active_conv_mean"] <= 1
    assert row["still_frame_ms"] > 0 and row["still_frame_in_clip_ms"] >= 0 and row["keyframe_ms"] > 0
    # The streamed step's host floor: measured, and of the step's order (below it on a CPU; on a GPU the step's
    # device work overlaps its host dispatch, so the two can come close)
    assert 0 < row["still_call_ms"] < 2 * row["still_frame_ms"]
    assert 0 < row["call_ms"] < row["dense_frame_ms"] * row["frames"]


@pytest.mark.parametrize(
    "option,bad,expected",
    [
        ("--rolling-refresh", "0", "expected a positive int"),
        ("--rolling-refresh", "often", "expected a positive int"),
        ("--keyframe-above", "1.5", "expected 'auto', 'none' or a fraction in [0, 1]"),
        ("--keyframe-above", "often", "expected 'auto', 'none' or a fraction in [0, 1]"),
        ("--dense-from-stride", "8,16", "expected one positive int or 'none'"),
        ("--dense-from-stride", "-2", "expected positive ints or 'none', comma-separated"),
    ],
)
def test_end_to_end_benchmark_refuses_bad_options(option, bad, expected, capsys):
    from deltajax import benchmark

    with pytest.raises(SystemExit):
        benchmark.main(["--preset", "smoke", option, bad])
    assert f"argument {option}: {expected}, got {bad!r}" in capsys.readouterr().err


def test_crossover_lists_the_kernels_of_a_step_with_and_without_the_dense_tail(tmp_path, monkeypatch):
    from benchmarks import crossover

    monkeypatch.setattr(crossover.measurement, "STEPS", 2)  # round trips a timed program (16): rows, not times
    out = tmp_path / "crossover.json"
    argv = ["--models", "efficientnet_lite0", "--size", "32x48", "--precisions", "f32_highest"]
    argv += ["--dense-from-stride", "none,8", "--fractions", "0,0.5,0.01"]  # the kernels traced at the smallest > 0
    assert crossover.main([*argv, "--trace", str(tmp_path / "trace"), "--out", str(out)]) == 0
    row, tail = json.loads(out.read_text())["rows"]
    assert (row["dense_from_stride"], tail["dense_from_stride"]) == (None, 8)
    assert row["fractions"] == tail["fractions"] == [0.0, 0.5, 0.01]
    assert row["kernels_at"] == 0.01 and len(row["delta_ms"]) == 3 and len(row["tile_activity"]) == 3
    assert len(row["configured_over_dense"]) == 3 and min(row["configured_ms"]) > 0
    assert "p=0.5" in crossover.table([row]) and "p=0.03" not in crossover.table([row])
    assert "as configured (auto)" in crossover.table([row])
    assert row["kernels_per_step"] > 0 and row["kernel_ms_per_step"] > 0
    assert any("deltajax" in t["kernel | hlo_op"] for t in row["top"]), row["top"][:5]
    # one step's kernels in launch order: about a step's share of them, deltajax's among them
    timeline = row["timeline"]
    assert timeline["span_us"] >= timeline["busy_us"] > 0 and timeline["gap_us"] >= 0
    assert len(timeline["kernels"]) == int(row["kernels_per_step"]) and all(k["us"] >= 0 for k in timeline["kernels"])
    assert any("deltajax" in k["kernel | hlo_op"] for k in timeline["kernels"])
    assert set(timeline["host_turns"]) == {"after_readback", "other"}
    assert "one step at p=" in crossover.table([row])
    # the dense frame timed once; the row as configured given with the first row only
    assert tail["dense_ms"] == row["dense_ms"] and "configured_ms" not in tail
    assert "(dense from stride 8)" in crossover.table([tail]) and min(tail["delta_ms"][1:]) > 0


@pytest.mark.parametrize("bad", ["0", "-4", "x", ""])
def test_crossover_refuses_a_bad_dense_from_stride(bad, capsys):
    from benchmarks import crossover

    with pytest.raises(SystemExit):
        crossover.main(["--dense-from-stride", bad])
    assert "argument --dense-from-stride: expected positive ints or 'none'" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["1.5", "-0.1", "x", "", "0,,1"])
def test_crossover_refuses_bad_fractions(bad, capsys):
    from benchmarks import crossover

    with pytest.raises(SystemExit):
        crossover.main([f"--fractions={bad}"])
    err = capsys.readouterr().err
    assert f"argument --fractions: expected comma-separated numbers in [0, 1], got {bad!r}" in err


def test_crossover_refuses_a_trace_without_a_changed_fraction(tmp_path, capsys):
    from benchmarks import crossover

    with pytest.raises(SystemExit):
        crossover.main(["--fractions", "0", "--trace", str(tmp_path)])
    assert "--trace needs a fraction above 0 in --fractions (the step it traces), got (0.0,)" in capsys.readouterr().err


def test_multi_device_benchmark_writes_rows(tmp_path):
    from benchmarks import multi_device

    out, table = tmp_path / "multi.json", tmp_path / "multi.md"
    argv = ["--devices", "1,2", "--sizes", "32x48", "--streams-per-device", "2", "--frames", "2", "--exact"]
    argv += ["--precision", "f32_highest"]  # the GPU's default is bfloat16
    assert multi_device.main([*argv, "--out", str(out), "--markdown", str(table)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["devices"], r["streams"]) for r in rows] == [(d, 2 * d) for d in (1, 2)[: jax.device_count()]]
    for r in rows:
        assert r["dense_fps"] > 0 and r["delta_fps"] > 0 and r["top1_agreement"] == 1.0
        assert r["logit_rel_error_max"] < 1e-4
    assert rows[0]["delta_scaling"] == 1.0
    assert "| 48x32 | 1 | 2 |" in table.read_text()


def test_multi_device_counts_put_the_end_points_first():
    from benchmarks.multi_device import device_counts

    assert device_counts([1, 2, 4, 8], 8) == [1, 8, 2, 4]
    assert device_counts([1, 2, 4, 8], 2) == [1, 2]
    assert device_counts([8, 1], 4) == [1]
    with pytest.raises(SystemExit, match=r"'--devices' \[8\] names no count in 1..4"):
        device_counts([8], 4)


def test_kernel_benchmark_traces_the_delta_calls(tmp_path):
    """--trace: each row gets one delta call's kernels from a profiler trace of the timed program, deltajax's among
    them (on a CPU: a conv + relu6 runs the fused custom call, a conv the plain one), and the traces stay in the
    folder given."""
    out, folder = tmp_path / "kernels.json", tmp_path / "traces"
    argv = ["--preset", "cpu", "--quick", "--layers", "conv3x3,conv3x3_relu6", "--fractions", "0,0.05"]
    assert kernels.main([*argv, "--trace", str(folder), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["trace_calls"] == kernels.TRACE_CALLS and len(data["rows"]) == 4
    for r in data["rows"]:
        assert r["kernels_per_call"] >= 1 and r["kernel_us_per_call"] > 0
        assert len(r["call_kernels"]) == int(r["kernels_per_call"]) and all(k["us"] >= 0 for k in r["call_kernels"])
        names = " ".join(k["kernel | hlo_op"] for k in r["call_kernels"])
        assert "deltajax" in names, names
        if jax.default_backend() == "cpu":  # thunks named by their custom call's target
            assert ("deltajax_conv_activation" in names) == (r["layer"] == "conv3x3_relu6"), names
    by_p = {(r["layer"], r["p"]): r for r in data["rows"]}
    # an empty call's kernels are shorter than those of a call with 5 % of the pixels active
    assert by_p[("conv3x3", 0.0)]["kernel_us_per_call"] < by_p[("conv3x3", 0.05)]["kernel_us_per_call"]
    assert len(list(folder.iterdir())) == 4
