"""Per-frame modes of a stream: skipped (no input change), delta step, or dense (keyframe, busy or non-finite frame)."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deltajax
from deltajax import _native
from deltajax import stats as dstats
from deltajax.transform import _frames
from tests.flax_nets import init_model
from tests.harness import moving_blobs, rel_error


@pytest.fixture(scope="module")
def video():
    """[12, 2, 40, 56, 3]: moving blobs (input tile activity 0.17-0.29) with a repeated frame (3), a busy frame
    (6: noise everywhere), a repeat of it (7), and a busy frame back to the blobs (8)."""
    v = moving_blobs(12, 2, 40, 56, 3, seed=7)
    v[3] = v[2]
    v[6] = v[5] + np.random.default_rng(0).normal(0, 0.2, v[5].shape).astype(v.dtype)
    v[7] = v[6]
    return jnp.asarray(v)


def _model(video):
    return init_model("mobilenet", video[0])


def _dense(model, variables, video):
    return jax.jit(jax.vmap(lambda x: model.apply(variables, x)))(video)


def _modes(stats) -> list[str]:
    """Per frame: 'dense', 'skip' or 'delta', read off the stats of run_clip."""
    key = dstats.keyframes(stats)
    active = np.asarray(stats["input"].active)
    return ["dense" if k else "skip" if a == 0 else "delta" for k, a in zip(key, active, strict=True)]


@pytest.mark.parametrize("keyframe_above", [0.5, None])
def test_modes_follow_input_activity_and_stay_exact(path, video, keyframe_above):
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=keyframe_above))
    got, stats = deltajax.run_clip(stepper, video, variables, with_stats=True)
    want = _dense(model, variables, video)
    errors = [rel_error(g, w) for g, w in zip(got, want, strict=True)]
    assert max(errors) <= 1e-4, errors
    modes = _modes(stats)
    busy = "dense" if keyframe_above is not None else "delta"
    assert modes[:4] == ["dense", "delta", "delta", "skip"], modes
    # After the busy frames (run plain dense, no state written) the next changed frame rebuilds the state.
    assert modes[6:10] == [busy, "skip", busy, busy], modes
    assert set(modes[10:]) == {"delta"}, modes
    # A skipped frame does no work anywhere and says so; a dense one does all of it.
    assert all(float(s.macs[3]) == 0 and float(s.active[3]) == 0 for s in stats.values())
    if busy == "dense":
        assert all(float(s.macs[6]) == float(s.dense_macs[6]) for s in stats.values())


def test_forced_keyframes_restart_exactly(video):
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=None))
    got, stats = deltajax.run_clip(stepper, video, variables, with_stats=True, keyframe_every=4)
    assert list(np.flatnonzero(dstats.keyframes(stats))) == [0, 4, 8]
    errors = [rel_error(g, w) for g, w in zip(got, _dense(model, variables, video), strict=True)]
    assert max(errors) <= 1e-4, errors


def test_the_state_is_refreshed_after_refresh_every_delta_steps(video):
    """With refresh_every=2, the changed frame after each second delta step since the state was built runs as a
    keyframe, exactly dense, and the count restarts there; skipped frames (3 and 7 repeat the frame before) are
    not counted."""
    model, variables = _model(video)
    config = deltajax.DeltaConfig(keyframe_above=None, refresh_every=2)
    got, stats = deltajax.run_clip(deltajax.delta(model.apply, config=config), video, variables, with_stats=True)
    modes = ["dense", "delta", "delta", "skip", "dense", "delta", "delta", "skip", "dense", "delta", "delta", "dense"]
    assert _modes(stats) == modes
    want = _dense(model, variables, video)
    for t in (4, 8, 11):
        assert rel_error(got[t], want[t]) <= 1e-6, t
    never = deltajax.DeltaConfig(keyframe_above=None, refresh_every=None)
    _, stats = deltajax.run_clip(deltajax.delta(model.apply, config=never), video, variables, with_stats=True)
    assert list(np.flatnonzero(dstats.keyframes(stats))) == [0]


@pytest.mark.parametrize("field", ["refresh_every", "rolling_refresh"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "often"])
def test_refresh_periods_are_validated(field, bad):
    with pytest.raises(ValueError, match=rf"DeltaConfig: {field} must be a positive int or None, got"):
        deltajax.DeltaConfig(**{field: bad})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_frame_gives_dense_output_and_the_stream_recovers(path, video, bad):
    """Property 5: a frame holding NaN / Inf runs the plain dense model (its output is dense's, non-finite where
    dense's is) and writes no state; the next frame rebuilds the state from scratch (a keyframe), so nothing
    non-finite lingers."""
    model, variables = _model(video)
    v = np.array(video)
    v[5, 1, 4, 9, 0] = bad
    v = jnp.asarray(v)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=None))
    got, stats = deltajax.run_clip(stepper, v, variables, with_stats=True)
    want = np.asarray(_dense(model, variables, v))
    got = np.asarray(got)
    np.testing.assert_allclose(got[5], want[5], rtol=1e-4, atol=1e-5)  # NaN where dense has NaN
    if np.isnan(bad):
        assert np.isnan(got[5, 1]).all() and np.isfinite(got[5, 0]).all()
    for t in [*range(5), *range(6, len(v))]:
        assert np.isfinite(got[t]).all(), t
        assert rel_error(got[t], want[t]) <= 1e-4, t
    assert list(np.flatnonzero(dstats.keyframes(stats))) == [0, 5, 6]
    assert list(np.flatnonzero(np.asarray(stats["input"].nonfinite))) == [5]
    assert int(stats["input"].nonfinite[5]) == 1


@pytest.mark.parametrize("keyframe_above", [None, 0.0])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_the_frame_after_a_non_finite_one_is_never_skipped(path, video, keyframe_above, bad):
    """Property 5 where the frame after a non-finite one brings back the frame before it: compared with the
    input's reference nothing changed, yet the last output is the non-finite frame's. That frame must run densely
    (dense's finite output, a keyframe), and no non-finite value may stay in the state; the frame after it is
    skipped again. In run_clip (frames in chunks where no frame runs as a delta step) and streamed."""
    model, variables = _model(video)
    clip = jnp.stack([video[0], video[1], video[1].at[1, 4, 9, 0].set(bad), video[1], video[1], video[2]])
    want = np.asarray(_dense(model, variables, clip))
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=keyframe_above))
    got, stats = deltajax.run_clip(stepper, clip, variables, with_stats=True)
    out, state, _ = stepper.init_with_stats(variables, clip[0])
    streamed, states = [out], []
    for frame in clip[1:]:
        out, state, _ = jax.jit(stepper.step_with_stats)(state, variables, frame)
        streamed.append(out)
        states.append(state)
    for outs in (np.asarray(got), np.stack(streamed)):
        for t in (3, 4, 5):
            assert np.isfinite(outs[t]).all(), t
            assert rel_error(outs[t], want[t]) <= 1e-4, t
    assert np.asarray(dstats.keyframes(stats))[2:5].tolist() == [True, True, False]
    for leaf in jax.tree_util.tree_leaves(states[2]):  # after the frame that followed the non-finite one
        assert np.isfinite(np.asarray(leaf, np.float32)).all()


def test_streamed_step_returns_last_output_on_a_repeated_frame(video):
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply)
    step = jax.jit(stepper.step_with_stats, donate_argnums=0)
    _, state = jax.jit(stepper.init)(variables, video[0])
    y1, state, _ = step(state, variables, video[1])
    y2, state, stats = step(state, variables, video[1])
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    assert not bool(dstats.keyframes(stats)) and float(stats["input"].active) == 0


@pytest.mark.parametrize(
    "bad",
    [-0.1, 1.5, "fast", float("nan"), True, {"gpu": 0.5}, {"cpu": 1.5}, {"cpu": "auto"}, (("cpu", 0.1), ("cpu", 0.2))],
)
def test_keyframe_above_is_validated(bad):
    with pytest.raises(ValueError, match=r"DeltaConfig: keyframe_above must be a fraction in \[0, 1\]"):
        deltajax.DeltaConfig(keyframe_above=bad)


@pytest.mark.parametrize("keyframe_every", [None, 3])
def test_zero_crossover_runs_every_changed_frame_densely(video, keyframe_every):
    """Repeated frames (3, 7) are skipped, every other frame runs densely; a keyframe asked for runs densely even
    on a repeated frame."""
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=0.0))
    got, stats = deltajax.run_clip(stepper, video, variables, with_stats=True, keyframe_every=keyframe_every)
    modes = _modes(stats)
    forced = (lambda t: False) if keyframe_every is None else (lambda t: t % keyframe_every == 0)
    assert modes == ["skip" if t in (3, 7) and not forced(t) else "dense" for t in range(len(video))], modes
    assert rel_error(got, _dense(model, variables, video)) <= 1e-5


@pytest.mark.parametrize("crossover_here", ["auto", 0.0])
def test_a_step_does_not_copy_the_layer_state(video, crossover_here):
    """The frame modes must leave the donated state in place: XLA copies every array passed through a
    conditional (twice), which made a skipped frame cost a dense one on the GPU. At most a few scalars and the
    output, and the input's reference (a frame: a keyframe stores the frame argument), may be copied, never the
    layers' arrays; also not when every changed frame runs densely on this platform (crossover 0 here, a stream
    with every layer's state: started by a stepper that may run delta steps elsewhere)."""
    model, variables = _model(video)
    keyframe_above = crossover_here if crossover_here == "auto" else {_native.default_platform(): crossover_here}
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=keyframe_above))
    _, state = stepper.init(variables, video[0])
    step = jax.jit(lambda s, x: stepper(s, variables, x), donate_argnums=0)
    hlo = step.lower(state, video[1]).compile().as_text()
    layer_shapes = {
        f"f32[{','.join(map(str, a.shape))}]" for a in jax.tree_util.tree_leaves(state.layers) if a.ndim == 4
    } - {f"f32[{','.join(map(str, video.shape[1:]))}]"}
    copies = re.findall(r"= (\w+\[[\d,]*\])\{[\d,]*\} copy\(", hlo)
    copied = [c for c in copies if c in layer_shapes]
    assert len(layer_shapes) > 3 and not copied, copied


def _control_flow(hlo: str) -> tuple[int, int]:
    """(while loops, conditionals) in a compiled module's text."""
    return len(re.findall(r" while\(", hlo)), len(re.findall(r" conditional\(", hlo))


@pytest.mark.parametrize("platform_crossover", [None, 0.0])
def test_a_zero_crossover_decides_a_frame_with_one_conditional(video, monkeypatch, platform_crossover):
    """With a crossover of 0 (set, or measured for the platform: the GPU's) a frame is skipped or runs the plain
    model: one conditional and no loop, since on a GPU every predicate is a round trip to the host (the loops of
    the other modes read six for a dense frame), also where a keyframe may be asked for."""
    model, variables = _model(video)
    if platform_crossover is None:
        config = deltajax.DeltaConfig(keyframe_above=0.0)
    else:
        platform = _native.default_platform()
        if platform not in _native.native_platforms():
            pytest.skip(f"no native kernels for {platform}: the reference's crossover applies")
        monkeypatch.setitem(_frames.AUTO_CROSSOVER, platform, platform_crossover)
        config = deltajax.DeltaConfig()
    stepper = deltajax.delta(model.apply, config=config)
    _, state = stepper.init(variables, video[0])
    lean = jax.jit(lambda s, x: stepper(s, variables, x)).lower(state, video[1]).compile().as_text()
    assert _control_flow(lean) == (0, 1)
    forced = jax.jit(lambda s, x, k: stepper(s, variables, x, keyframe=k)).lower(state, video[1], True)
    assert _control_flow(forced.compile().as_text()) == (0, 1)
    general = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=0.5))
    _, state = general.init(variables, video[0])
    loops, _ = _control_flow(jax.jit(lambda s, x: general(s, variables, x)).lower(state, video[1]).compile().as_text())
    assert loops >= 2


def _computations(hlo: str) -> dict[str, str]:
    """A compiled module's text by computation name (the entry computation's as 'ENTRY')."""
    parts = re.split(r"\n(?=\S[^\n]*\{\s*$)", hlo, flags=re.M)
    named = {}
    for part in parts:
        head = part.strip().split("\n", 1)[0]
        if head.endswith("{"):
            named["ENTRY" if head.startswith("ENTRY") else head.split()[0].lstrip("%")] = part
    return named


def _calls(text: str, name: str) -> bool:
    """Whether computation text ``text`` calls computation ``name`` (a fusion's or a reduction's; the name whole:
    ``%fused_reduce`` is not ``%fused_reduce.2``)."""
    return re.search(rf"(calls|to_apply)=%{re.escape(name)}(?![\w.\-])", text) is not None


def test_the_parameters_own_arithmetic_runs_once_per_call_not_at_every_delta_step(video):
    """The program's frame-independent values (batch-norm's rsqrt of the variances, ...) are computed once per call
    of step_frames, before its frame loop, not inside the delta and keyframe loops, where XLA's loop-invariant
    code motion is off (they ran at every delta step); only the plain model's dense frame computes its own."""
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=None))
    _, state = stepper.init(variables, video[0])
    step = jax.jit(lambda s, v, x: stepper.step_frames(s, v, x)[:2])  # the parameters an argument, not constants
    computations = _computations(step.lower(state, variables, video[1:4]).compile().as_text())
    with_rsqrt = {name for name, text in computations.items() if re.search(r" rsqrt\(", text)}

    def computes_rsqrt(name: str) -> bool:
        text = computations[name]
        return name in with_rsqrt or any(_calls(text, f) for f in with_rsqrt)

    bodies = set(re.findall(r" while\(.*?body=%([\w.\-]+)", "\n".join(computations.values())))
    assert computes_rsqrt("ENTRY")
    assert sum(computes_rsqrt(b) for b in bodies) <= 1, sorted(b for b in bodies if computes_rsqrt(b))


def test_a_streamed_step_computes_the_parameters_arithmetic_only_in_the_modes_that_run_the_model(video):
    """One streamed frame computes the frame-independent values inside its delta and keyframe loops, not before
    them: a skipped frame runs none of that arithmetic, and the modes that do fuse it into their consumers."""
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=None))
    _, state = stepper.init(variables, video[0])
    step = jax.jit(lambda s, v, x: stepper(s, v, x))  # the parameters an argument, not constants
    computations = _computations(step.lower(state, variables, video[1]).compile().as_text())
    with_rsqrt = {name for name, text in computations.items() if re.search(r" rsqrt\(", text)}
    entry = computations["ENTRY"]
    assert with_rsqrt, "the model's batch norms compute rsqrt somewhere"
    assert "ENTRY" not in with_rsqrt
    assert not any(_calls(entry, f) for f in with_rsqrt)


def test_where_no_frame_runs_a_delta_step_the_input_check_writes_no_delta(video):
    """A never-delta stepper reads only whether its input changed: its streamed step and its clip compare the
    frame in plain XLA (ops.sparsify_changed, one fused pass) and never call the native sparsify, which writes
    the delta's values and mask; a stepper that runs delta steps calls it."""
    if _native.default_platform() not in _native.native_platforms():
        pytest.skip("no native kernels here: every sparsify is plain XLA")
    model, variables = _model(video)

    def sparsify_calls(keyframe_above, fn) -> int:
        stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=keyframe_above))
        _, state = stepper.init(variables, video[0])
        hlo = jax.jit(lambda s, x: fn(stepper, s, x)).lower(state, video[1:4]).compile().as_text()
        return len(re.findall(r'custom_call_target="deltajax_sparsify"', hlo))

    def step(stepper, state, frames):
        return stepper(state, variables, frames[0])

    def clip(stepper, state, frames):
        return stepper.step_frames(state, variables, frames)

    assert sparsify_calls(0.0, step) == sparsify_calls(0.0, clip) == 0
    assert sparsify_calls(None, step) >= 1 and sparsify_calls(None, clip) >= 1


def test_where_no_frame_runs_a_delta_step_the_state_is_the_input_reference(video):
    """keyframe_above=0 (a crossover of 0 everywhere): no mode reads a layer's state, so a stream keeps the input's
    reference alone, and runs frame by frame as the general program where this platform's crossover is 0 does
    (skipped, plain dense, a forced keyframe, a non-finite frame): the same outputs and stats, bit for bit."""
    model, variables = _model(video)
    here = _native.default_platform()
    frames = [*video[:8], video[8].at[0, 0, 0, 0].set(jnp.nan), video[9]]
    runs = {}
    for name, above in (("lean", 0.0), ("general", {here: 0.0})):
        stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=above))
        assert stepper.never_delta == (name == "lean")
        out, state, stats = jax.jit(stepper.init_with_stats)(variables, frames[0])
        assert (set(state.layers) == {"input"}) == (name == "lean")
        step = jax.jit(stepper.step_with_stats, static_argnames="keyframe")
        runs[name] = [(out, stats)]
        for t, frame in enumerate(frames[1:], 1):
            out, state, stats = step(state, variables, frame, keyframe=t == 5)
            runs[name].append((out, stats))
    assert [bool(s["input"].keyframe) for _, s in runs["lean"]] == [1, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    for t, (lean, general) in enumerate(zip(runs["lean"], runs["general"], strict=True)):
        np.testing.assert_array_equal(lean[0], general[0], err_msg=f"frame {t}")
        for a, b in zip(jax.tree_util.tree_leaves(lean[1]), jax.tree_util.tree_leaves(general[1]), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"frame {t}")


def _stepped_one_by_one(stepper, variables, frames, keyframes):
    """``(per-frame (output, stats), final state)`` of jitted init_with_stats on ``frames[0]`` and step_with_stats
    on the others (``keyframes[t]``)."""
    out, state, stats = jax.jit(stepper.init_with_stats)(variables, frames[0])
    want, step = [(out, stats)], jax.jit(stepper.step_with_stats)
    for t in range(1, len(frames)):
        out, state, stats = step(state, variables, frames[t], keyframe=keyframes[t])
        want.append((out, stats))
    return want, state


def _assert_frames_match(outs, stats, want):
    """Outputs ``[K, ...]`` and stats of ``[K]`` arrays against ``_stepped_one_by_one``'s per-frame ones: the stats
    bit for bit, the outputs to float rounding (XLA may fuse the model differently inside a clip's loops)."""
    for t, (out, frame_stats) in enumerate(want):
        np.testing.assert_allclose(outs[t], out, rtol=1e-6, atol=1e-6, err_msg=f"frame {t}")
        for name, s in frame_stats.items():
            for a, b in zip(jax.tree_util.tree_leaves(stats[name]), s, strict=True):
                np.testing.assert_array_equal(a[t], b, err_msg=f"frame {t}, layer {name}")


def _chunked_clip(video):
    """[25, ...] in chunks of 8 (_frames.CHUNK), the first frame in the first: the first frame and 7 changed ones
    (a busy one among them), 8 copies of the last (nothing changes), then changed, repeated and non-finite
    frames mixed, and a last chunk of 1 (padded with 7 skipped frames)."""
    changed = [video[t] for t in (1, 2, 4, 5, 6, 8, 10)]
    nan = video[11].at[1, 3, 4, 0].set(jnp.nan)
    mixed = [video[11], video[11], nan, video[11], video[0], video[1], video[1], video[2]]
    return jnp.stack([video[0], *changed, *[video[10]] * 8, *mixed, video[3]])


@pytest.mark.parametrize("keyframe_every", [None, 4])
def test_run_clip_decides_chunks_of_frames_as_frame_by_frame(video, keyframe_every):
    """Where no frame runs as a delta step, run_clip decides a clip that mixes skipped and changed frames 8 frames
    at once (Stepper.run_frames: all changed, all skipped, or mixed): the outputs and stats of stepping the
    frames one by one (the stats bit for bit, the outputs to float rounding: XLA may fuse the model differently
    inside the clip's loops)."""
    model, variables = _model(video)
    assert _frames.CHUNK == 8
    clip = _chunked_clip(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=0.0))
    got, stats = deltajax.run_clip(stepper, clip, variables, with_stats=True, keyframe_every=keyframe_every)
    keyframes = [keyframe_every is not None and t % 4 == 0 for t in range(len(clip))]
    want, _ = _stepped_one_by_one(stepper, variables, clip, keyframes)
    modes = _modes(stats)
    assert modes[8:16] == ["skip" if keyframe_every is None or t % 4 else "dense" for t in range(8, 16)], modes
    assert modes[:8] == ["dense"] * 8 and modes[17] == "skip", modes
    assert int(stats["input"].nonfinite[18]) == 1 and not np.isfinite(np.asarray(got[18])).all()
    _assert_frames_match(got, stats, want)


@pytest.mark.parametrize("modes", ["SSSSS", "DDDDD", "DDDSSSDSDD", "SDSSD"])
def test_skipped_or_plain_gives_each_frame_its_mode_s_output(modes):
    """_frames.skipped_or_plain: a DENSE frame gets plain(frame), a SKIP frame the output before it (the last one
    for the first), for runs of one mode and for mixed runs (in chunks of 3 here: all changed, all skipped,
    mixed, and a last one padded), with a pytree output; plain runs once per DENSE frame, never for a skipped or
    padding one."""
    frames = jnp.arange(2.0 * len(modes)).reshape(len(modes), 2) + 1
    runs = []

    def value(frame):
        return {"map": frame * 10, "sum": frame.sum()}

    def plain(frame):
        jax.debug.callback(lambda f: runs.append(float(f[0])), frame)
        return value(frame)

    last = {"map": jnp.full((2,), -1.0), "sum": jnp.float32(-1)}
    codes = jnp.asarray([_frames.DENSE if m == "D" else _frames.SKIP for m in modes], jnp.int32)
    got = jax.jit(lambda f, m: _frames.skipped_or_plain(plain, last, f, m, chunk=3))(frames, codes)
    out, want = last, []
    for frame, mode in zip(frames, modes, strict=True):
        out = value(frame) if mode == "D" else out
        want.append(out)
    for key in last:
        np.testing.assert_array_equal(got[key], jnp.stack([w[key] for w in want]), err_msg=key)
    jax.effects_barrier()
    assert sorted(runs) == [float(f[0]) for f, m in zip(frames, modes, strict=True) if m == "D"]


@pytest.mark.parametrize("keyframe_above", [0.0, 0.5])
def test_step_frames_is_frame_by_frame(video, keyframe_above):
    """step_frames over frames [K, ...] gives the outputs, state and stats of K steps, for a stepper that runs
    no delta step (one decision for the K frames) and for one that does (a scan of steps)."""
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=keyframe_above))
    _, state = stepper.init(variables, video[0])
    keyframes = jnp.arange(1, 6) == 4
    outs, got, stats = jax.jit(stepper.step_frames, static_argnames="with_stats")(
        state, variables, video[1:6], keyframes=keyframes, with_stats=True
    )
    for t in range(5):
        out, state, frame_stats = stepper.step_with_stats(state, variables, video[1 + t], keyframe=keyframes[t])
        np.testing.assert_array_equal(outs[t], out, err_msg=f"frame {t}")
        assert bool(stats["input"].keyframe[t]) == bool(frame_stats["input"].keyframe)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert stepper.step_frames(state, variables, video[1:3])[2] is None


@pytest.mark.parametrize(
    "keyframe_above, clip",
    [(0.0, c) for c in ("changing", "still", "mixed", "one frame", "non-finite first")]
    + [(0.5, "mixed"), (0.5, "one frame")],  # a stepper running delta steps: init, then a scan of steps
)
def test_run_frames_is_init_then_steps(video, keyframe_above, clip):
    """run_frames over frames [K, ...] gives the outputs (to float rounding), stats and final state (bit for bit)
    of init_with_stats and K - 1 steps: for a never-delta stepper (the first frame in the same decision as the
    others, so a clip whose frames all change is one lax.map, and a still one a dense frame then skipped ones)
    and for one that runs delta steps."""
    frames = {
        "changing": video[:6],
        "still": jnp.stack([video[2]] * 5),
        "mixed": jnp.stack([video[0], video[0], video[1], video[1], video[1], video[2]]),
        "one frame": video[4:5],
        "non-finite first": jnp.stack([video[1].at[0, 2, 3, 1].set(jnp.nan), video[1], video[1]]),
    }[clip]
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=keyframe_above))
    keyframes = jnp.arange(len(frames)) == 3
    outs, got, stats = jax.jit(stepper.run_frames, static_argnames="with_stats")(
        variables, frames, keyframes=keyframes, with_stats=True
    )
    want, state = _stepped_one_by_one(stepper, variables, frames, keyframes)
    _assert_frames_match(outs, stats, want)
    np.testing.assert_allclose(got.output, state.output, rtol=1e-6, atol=1e-6)
    flags = (got.layers, got.restart, got.age, got.nonfinite), (state.layers, state.restart, state.age, state.nonfinite)
    for a, b in zip(*map(jax.tree_util.tree_leaves, flags), strict=True):
        np.testing.assert_array_equal(a, b)
    assert stepper.run_frames(variables, frames)[2] is None


def test_step_frames_names_bad_frames_and_keyframes(video):
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=0.0))
    _, state = stepper.init(variables, video[0])
    with pytest.raises(
        ValueError,
        match=r"step_frames: argument args\[1\] \(the frames\) must be \[K, N, H, W, C\], "
        r"got ArrayImpl of shape \(2, 40, 56, 3\)",
    ):
        stepper.step_frames(state, variables, video[1])
    with pytest.raises(
        ValueError,
        match=r"step_frames: argument 'keyframes' must be a bool array of shape \(2,\) "
        r"\(one per frame\), got int32 of shape \(3,\)",
    ):
        stepper.step_frames(state, variables, video[1:3], keyframes=jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"has shape \(2, 40, 28, 3\) and dtype float32, expected shape"):
        stepper.step_frames(state, variables, video[1:3, :, :, :28])
    for keyframe_above in (0.0, None):
        stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=keyframe_above))
        with pytest.raises(ValueError, match=r"run_frames: argument args\[1\] \(the frames\) must be \[K, N, H"):
            stepper.run_frames(variables, video[1])
        with pytest.raises(ValueError, match=r"run_frames: argument 'keyframes' must be a bool array of shape \(2,\)"):
            stepper.run_frames(variables, video[1:3], keyframes=[True])
        with pytest.raises(ValueError, match=r"run_frames: argument args\[1\] \(the frame\) has dtype int32, expected"):
            stepper.run_frames(variables, video[1:3].astype(jnp.int32))


def test_video_loops_keep_the_input_reference_alone_where_the_platform_crossover_is_0(video):
    """run_clip and streaming resolve keyframe_above for the platform they run on (Stepper.on_platform): where
    its crossover is 0 the stream keeps the input's reference alone, with the outputs of the stepper as given;
    elsewhere the state holds every layer's. A stepper that runs delta steps refuses such a state by name."""
    model, variables = _model(video)
    here = _native.default_platform()
    elsewhere = next(p for p in ("cpu", "cuda") if p != here)
    lean = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above={here: 0.0}))
    assert lean.on_platform(here) is lean.on_platform(here) and lean.on_platform(here).never_delta
    with pytest.raises(
        ValueError, match=r"on_platform: argument 'platform' must be one of \['cpu', 'cuda', .* got 'gpu'"
    ):
        lean.on_platform("gpu")
    start, step = deltajax.streaming(lean, variables)
    _, state = start(video[0])
    assert set(state[1].layers) == {"input"}
    # streaming compiles the parameters in as constants: the same frames up to float32 rounding
    streamed = step(state, video[1])[0]
    assert rel_error(streamed, lean(lean.init(variables, video[0])[1], variables, video[1])[0]) <= 1e-6
    assert rel_error(deltajax.run_clip(lean, video[:2], variables)[1], streamed) <= 1e-6
    general = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above={here: 0.5, elsewhere: 0.0}))
    assert general.on_platform(here) is general
    assert len(deltajax.streaming(general, variables).start(video[0])[1][1].layers) > 1
    _, state = start(video[0])  # the first was donated to the step
    with pytest.raises(ValueError, match=r"argument 'state' holds the input's reference alone .* this stepper runs"):
        general(state[1], variables, video[1])


def test_where_no_frame_runs_a_delta_step_layer_names_are_still_checked(video):
    model, variables = _model(video)
    config = deltajax.DeltaConfig(keyframe_above=0.0, layers={"nope/act": 0.1})
    with pytest.raises(ValueError, match=r"DeltaConfig: layer 'nope/act' is not a configurable layer of this model"):
        deltajax.delta(model.apply, config=config).init(variables, video[0])


def test_a_per_platform_crossover_applies_on_its_platform_only(video):
    """keyframe_above={platform: value}: that value on the platform named ("auto" elsewhere), both for the
    program's structure (a crossover of 0: one conditional, no loop) and for the frames' modes."""
    model, variables = _model(video)
    here = _native.default_platform()
    elsewhere = next(p for p in ("cpu", "cuda") if p != here)
    _, state = deltajax.delta(model.apply).init(variables, video[0])

    def control_flow(keyframe_above):
        stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=keyframe_above))
        return _control_flow(jax.jit(lambda s, x: stepper(s, variables, x)).lower(state, video[1]).compile().as_text())

    assert control_flow({here: 0.0}) == (0, 1)
    assert control_flow({elsewhere: 0.0, here: None})[0] >= 2
    busy = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above={here: 0.5, elsewhere: 0.0}))
    got, stats = deltajax.run_clip(busy, video, variables, with_stats=True)
    assert _modes(stats)[:10] == [
        "dense",
        "delta",
        "delta",
        "skip",
        "delta",
        "delta",
        "dense",
        "skip",
        "dense",
        "dense",
    ]
    assert rel_error(got, _dense(model, variables, video)) <= 1e-4


def test_steps_without_stats_compute_none(video):
    """The per-layer statistics reduce every layer's mask; carried through the mode loops they are not dead code to
    XLA, so a step whose caller drops them must not compute them (on an H200 they took 0.14 ms of
    EfficientNet-Lite0's 1.57 ms delta step). The reductions left are the input's tile activity and
    non-finite count, which choose the frame's mode."""
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply, config=deltajax.DeltaConfig(keyframe_above=None))
    _, state = stepper.init(variables, video[0])

    def reduces(fn, *args) -> int:
        return len(re.findall(r" reduce\(", jax.jit(fn).lower(*args).compile().as_text()))

    layers = len(stepper.layers(variables, video[0]))
    assert reduces(lambda s, x: stepper.step_with_stats(s, variables, x), state, video[1]) >= layers
    assert reduces(lambda c: deltajax.run_clip(stepper, c, variables, with_stats=True), video[:3]) >= layers
    assert reduces(lambda s, x: stepper(s, variables, x), state, video[1]) <= 6
    assert reduces(lambda c: deltajax.run_clip(stepper, c, variables), video[:3]) <= 8
    start, step = deltajax.streaming(stepper, variables)
    _, streamed = start(video[0])
    assert reduces(step, streamed, video[1]) <= 6


def test_a_clip_with_stats_copies_no_scalar_per_layer(video):
    """The per-layer stats pass through the frame modes' loops packed in one vector: hundreds of scalars in a
    loop's carry were each copied on every frame (on an H200, EfficientNet-Lite0 with stats: 0.9 ms per still
    frame against 0.27 without). A few copies of single scalars (the stream's flags, the frame counter) remain,
    never one per layer."""
    model, variables = _model(video)
    stepper = deltajax.delta(model.apply)
    run = jax.jit(lambda c, v: deltajax.run_clip(stepper, c, v, with_stats=True))
    hlo = run.lower(video[:3], variables).compile().as_text()
    scalar_copies = re.findall(r"= \w+\[\]\{?\}? copy\(", hlo)
    layers = len(stepper.layers(variables, video[0]))
    assert layers >= 20 and len(scalar_copies) <= 12, (layers, len(scalar_copies))
